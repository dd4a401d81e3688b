//! Rate limits: token buckets for message sends, and login throttling.
//! In memory only: a restart forgives, which is what a throttle should do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Configurable limits; the defaults are API.md §1's.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Messages a user (and, separately, a connection) may send at once…
    pub msg_burst: u32,
    /// …and per second, steadily.
    pub msg_rate: u32,
    /// Failed logins in a row before an account is slowed down.
    pub login_fails_per_account: u32,
    /// Failed logins per client address per minute before it is refused.
    pub login_fails_per_addr: u32,
    /// Events a connection may lag behind before it is closed. At least
    /// two commit batches (`commit::MAX_BATCH`): one batch is published at
    /// once, and a client that keeps up must never be closed for that.
    pub conn_queue: usize,
    /// Open WebSocket connections per user.
    pub conns_per_user: usize,
    /// Open TCP connections in all.
    pub max_connections: usize,
    /// A WebSocket that has not authenticated by then is closed (1008).
    pub auth_deadline: Duration,
    /// Messages per chat in a whole-chat view (actions' `get_messages`,
    /// `read_message`, `create_chat`): the newest this many.
    pub chat_history: usize,
    /// Threads hashing passwords (`core::passwords`), at least 1.
    pub argon2_threads: usize,
    /// The store's cache bound and log segment size.
    pub store: crate::store::Options,
    /// How often sled's copy is made durable and the log trimmed.
    pub checkpoint: crate::store::checkpoint::Every,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            msg_burst: 200,
            msg_rate: 50,
            login_fails_per_account: 10,
            login_fails_per_addr: 100,
            conn_queue: 4 * super::commit::MAX_BATCH,
            conns_per_user: 32,
            max_connections: 16_384,
            auth_deadline: Duration::from_secs(10),
            chat_history: 100,
            argon2_threads: cores(),
            store: crate::store::Options::default(),
            checkpoint: crate::store::checkpoint::Every::default(),
        }
    }
}

/// The machine's cores, as the process may use them (1 if unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Clone, Debug)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    pub fn new(burst: u32, rate: u32) -> Bucket {
        Bucket {
            tokens: burst as f64,
            last: Instant::now(),
            rate: rate as f64,
            burst: burst as f64,
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.rate.max(0.001),
            ))
        }
    }
}

/// Per-user buckets, kept for users that sent recently.
pub struct UserBuckets {
    burst: u32,
    rate: u32,
    map: Mutex<HashMap<u64, Bucket>>,
}

impl UserBuckets {
    pub fn new(burst: u32, rate: u32) -> UserBuckets {
        UserBuckets {
            burst,
            rate,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn take(&self, user: u64) -> Result<(), Duration> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            // A full bucket carries no state worth keeping.
            let full = Duration::from_secs_f64(self.burst as f64 / self.rate.max(1) as f64);
            map.retain(|_, b| now.saturating_duration_since(b.last) < full);
        }
        map.entry(user)
            .or_insert_with(|| Bucket::new(self.burst, self.rate))
            .take(now)
    }
}

const WINDOW: Duration = Duration::from_secs(60);
const MAX_DELAY: Duration = Duration::from_secs(300);

/// Login throttling (API.md §1): counts failures only. Per account, after
/// `per_account` failures in a row each further attempt must wait, the wait
/// doubling from 1 s up to 5 minutes — slow, never a permanent lock-out.
/// Per client address, `per_addr` failures within a minute refuse that
/// address until the minute is over.
pub struct LoginThrottle {
    per_account: u32,
    per_addr: u32,
    accounts: Mutex<HashMap<String, (u32, Instant)>>,
    addrs: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginThrottle {
    pub fn new(per_account: u32, per_addr: u32) -> LoginThrottle {
        LoginThrottle {
            per_account,
            per_addr,
            accounts: Mutex::new(HashMap::new()),
            addrs: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an attempt may be made now; `Err(wait)` if not.
    pub fn check(&self, username: &str, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        if let Some(&(n, start)) = self
            .addrs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
        {
            let elapsed = now.saturating_duration_since(start);
            if n >= self.per_addr && elapsed < WINDOW {
                return Err(WINDOW - elapsed);
            }
        }
        if let Some(&(n, last)) = self
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(username)
        {
            if n >= self.per_account {
                let delay =
                    Duration::from_secs(1u64 << (n - self.per_account).min(16)).min(MAX_DELAY);
                let elapsed = now.saturating_duration_since(last);
                if elapsed < delay {
                    return Err(delay - elapsed);
                }
            }
        }
        Ok(())
    }

    pub fn failed(&self, username: &str, addr: IpAddr, now: Instant) {
        {
            let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
            if accounts.len() > 100_000 {
                accounts
                    .retain(|_, (_, last)| now.saturating_duration_since(*last) < MAX_DELAY * 2);
            }
            let e = accounts.entry(username.to_owned()).or_insert((0, now));
            e.0 = e.0.saturating_add(1);
            e.1 = now;
        }
        let mut addrs = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
        if addrs.len() > 100_000 {
            addrs.retain(|_, (_, start)| now.saturating_duration_since(*start) < WINDOW);
        }
        let e = addrs.entry(addr).or_insert((0, now));
        if now.saturating_duration_since(e.1) >= WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
    }

    pub fn succeeded(&self, username: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(3, 10);
        for _ in 0..3 {
            assert!(b.take(t0).is_ok());
        }
        let wait = b.take(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100));
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn account_throttle_starts_after_ten_failures_and_doubles() {
        let t = LoginThrottle::new(10, 100);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(t.check("ann", ip, t0).is_ok());
            t.failed("ann", ip, t0);
        }
        assert_eq!(t.check("ann", ip, t0), Err(Duration::from_secs(1)));
        // Other accounts from the same address are unaffected.
        assert!(t.check("bob", ip, t0).is_ok());
        let t1 = t0 + Duration::from_secs(1);
        assert!(t.check("ann", ip, t1).is_ok());
        t.failed("ann", ip, t1);
        assert_eq!(t.check("ann", ip, t1), Err(Duration::from_secs(2)));
        t.succeeded("ann");
        assert!(t.check("ann", ip, t1).is_ok());
    }

    #[test]
    fn account_delay_is_capped_never_permanent() {
        let t = LoginThrottle::new(10, 1_000_000);
        let ip: IpAddr = "::1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..200 {
            t.failed("ann", ip, t0);
        }
        assert_eq!(t.check("ann", ip, t0), Err(MAX_DELAY));
        assert!(t.check("ann", ip, t0 + MAX_DELAY).is_ok());
    }

    #[test]
    fn address_throttle_needs_a_hundred_failures_in_a_minute() {
        let t = LoginThrottle::new(1_000, 100);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..99 {
            t.failed(&format!("user{i}"), ip, t0);
        }
        assert!(t.check("x", ip, t0).is_ok());
        t.failed("x", ip, t0);
        assert!(t.check("y", ip, t0).is_err());
        assert!(t.check("y", ip, t0 + WINDOW).is_ok());
    }
}
