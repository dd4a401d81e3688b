//! Whose address a request comes from, when reverse proxies relay it.
//!
//! `X-Forwarded-For` is believed only from peers the operator named with
//! `--trusted-proxies`: from such a peer, the client is the right-most
//! address in the header that is not itself a trusted proxy (proxies append
//! what they saw, so everything to the left of that is the client's own
//! claim and may be forged). From any other peer the header is ignored.
//! The client address drives the per-address login throttle and decides
//! whether `/metrics` is asked for from this machine.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use hyper::HeaderMap;

/// At most this many `X-Forwarded-For` hops are looked at, right to left.
const MAX_HOPS: usize = 32;

/// One address or network, `203.0.113.7`, `10.0.0.0/8` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), u32::from(a).into(), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn masked(net: u128, addr: u128, bits: u8, prefix: u8) -> bool {
    let shift = u32::from(bits - prefix);
    shift >= 128 || (net >> shift) == (addr >> shift)
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack socket reports)
/// compares as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Net, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = canonical(
            a.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("{s:?} is not an IP address or network"))?,
        );
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => bits,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= bits)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={bits}"))?,
        };
        Ok(Net { addr, prefix })
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The proxies whose `X-Forwarded-For` is believed; empty by default.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<Net>);

impl TrustedProxies {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted
    /// proxy and `X-Forwarded-For` names someone further out.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.resolve(peer, headers).0
    }

    /// Whether a request comes straight from this machine, or through
    /// trusted proxies from this machine. A forwarding header from a peer
    /// that is not trusted means "relayed by someone we cannot check", which
    /// does not count as local even on loopback.
    pub fn is_local(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        let (client, by_xff) = self.resolve(peer, headers);
        let forwarded = ["x-forwarded-for", "forwarded", "x-real-ip"]
            .iter()
            .any(|h| headers.contains_key(*h));
        canonical(client).is_loopback() && (!forwarded || by_xff)
    }

    /// The client, and whether `X-Forwarded-For` was believed.
    fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> (IpAddr, bool) {
        if !self.trusts(peer) || !headers.contains_key("x-forwarded-for") {
            return (peer, false);
        }
        // Several header lines form one list, in order.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev().take(MAX_HOPS) {
            // Unreadable: the hop before it (a trusted proxy) is as far as
            // we can see.
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        (client, true)
    }
}

/// `203.0.113.7`, `2001:db8::1`, and with a port `203.0.113.7:4711` or
/// `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .map(canonical)
}

/// Parses `--trusted-proxies`: a comma-separated list of addresses and
/// networks (empty: trust none).
pub fn parse_list(s: &str) -> Result<TrustedProxies, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(Net::from_str)
        .collect::<Result<Vec<_>, _>>()
        .map(TrustedProxies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn networks_parse_and_match() {
        let t = parse_list("127.0.0.1, 10.0.0.0/8,fd00::/8 , ::1").unwrap();
        for yes in ["127.0.0.1", "10.1.2.3", "fd12::1", "::1", "::ffff:10.9.9.9"] {
            assert!(t.trusts(ip(yes)), "{yes}");
        }
        for no in ["127.0.0.2", "11.0.0.1", "fe80::1", "203.0.113.1"] {
            assert!(!t.trusts(ip(no)), "{no}");
        }
        assert!(parse_list("0.0.0.0/0").unwrap().trusts(ip("198.51.100.1")));
        assert!(!parse_list("").unwrap().trusts(ip("127.0.0.1")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "localhost",
            "10.0.0.0/",
            "1.2.3.4/x",
        ] {
            let e = parse_list(bad).unwrap_err();
            assert!(e.contains(bad.split('/').next().unwrap()), "{bad}: {e}");
        }
        assert_eq!(
            "10.1.0.0/16".parse::<Net>().unwrap().to_string(),
            "10.1.0.0/16"
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let t = parse_list("127.0.0.1,10.0.0.0/8").unwrap();
        let outside = ip("203.0.113.5");
        // Not a trusted peer: the header is the client's word, ignored.
        assert_eq!(t.client(outside, &xff(&["198.51.100.1"])), outside);
        // A trusted peer: the right-most untrusted hop.
        let lo = ip("127.0.0.1");
        assert_eq!(t.client(lo, &xff(&["198.51.100.1"])), ip("198.51.100.1"));
        assert_eq!(
            t.client(lo, &xff(&["6.6.6.6, 198.51.100.1, 10.0.0.2"])),
            ip("198.51.100.1"),
            "a forged left part cannot move the client"
        );
        assert_eq!(
            t.client(lo, &xff(&["6.6.6.6", "198.51.100.1:4711"])),
            ip("198.51.100.1"),
            "header lines join into one list; ports are dropped"
        );
        assert_eq!(t.client(lo, &xff(&["[2001:db8::1]:80"])), ip("2001:db8::1"));
        // Unreadable hop: as far as the trusted chain goes.
        assert_eq!(
            t.client(lo, &xff(&["10.0.0.3, garbage, 10.0.0.2"])),
            ip("10.0.0.2")
        );
        assert_eq!(t.client(lo, &xff(&["garbage"])), lo);
        // Only trusted hops: the left-most of them.
        assert_eq!(t.client(lo, &xff(&["10.0.0.9, 10.0.0.2"])), ip("10.0.0.9"));
        // No header: the peer.
        assert_eq!(t.client(lo, &HeaderMap::new()), lo);
    }

    #[test]
    fn hops_beyond_the_cap_are_not_looked_at() {
        let t = parse_list("10.0.0.0/8").unwrap();
        let mut chain = vec!["198.51.100.1".to_owned()];
        chain.extend((0..MAX_HOPS).map(|i| format!("10.0.0.{i}")));
        let c = t.client(ip("10.0.0.1"), &xff(&[&chain.join(",")]));
        assert_eq!(c, ip("10.0.0.0"), "the last hop within the cap");
    }

    #[test]
    fn local_means_loopback_and_not_relayed_by_strangers() {
        let none = TrustedProxies::default();
        let lo = ip("127.0.0.1");
        assert!(none.is_local(lo, &HeaderMap::new()));
        assert!(!none.is_local(ip("203.0.113.5"), &HeaderMap::new()));
        assert!(
            !none.is_local(lo, &xff(&["127.0.0.1"])),
            "an unchecked relay"
        );
        let mut real_ip = HeaderMap::new();
        real_ip.insert("x-real-ip", "127.0.0.1".parse().unwrap());
        assert!(!none.is_local(lo, &real_ip));

        let proxy = parse_list("127.0.0.1").unwrap();
        assert!(proxy.is_local(lo, &xff(&["127.0.0.1"])));
        assert!(proxy.is_local(lo, &xff(&["::1"])));
        assert!(!proxy.is_local(lo, &xff(&["203.0.113.9"])));
        assert!(
            !proxy.is_local(lo, &real_ip),
            "trusted, but no X-Forwarded-For"
        );
        assert!(proxy.is_local(lo, &HeaderMap::new()), "a direct request");
    }
}
