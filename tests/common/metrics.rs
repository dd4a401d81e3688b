//! Reading `/metrics` (Prometheus text) the way a scraper on loopback
//! does.

use super::http::get;

/// A counter or gauge of `/metrics` (asked from loopback).
pub async fn metric(addr: &str, name: &str) -> u64 {
    let text = get(addr, "/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}
