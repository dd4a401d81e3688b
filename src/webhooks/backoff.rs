//! The retry schedule: exponential, capped, with jitter. Pure: the caller
//! passes the randomness.

use std::time::Duration;

use rand::Rng;

/// The nominal wait before the first retry (API.md §5: within 2 s).
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The default cap of the nominal wait (`--webhook-max-backoff-secs`).
pub const DEFAULT_MAX: Duration = Duration::from_secs(300);

/// The nominal wait before retry `n` (1 = the first retry, after the
/// first attempt failed): `FIRST_RETRY · 2^(n-1)`, at most `cap`.
pub fn nominal(n: u32, cap: Duration) -> Duration {
    let doublings = n.saturating_sub(1).min(30);
    FIRST_RETRY.saturating_mul(1 << doublings).min(cap)
}

/// The wait actually used: uniform in `[nominal/2, nominal]`, so receivers
/// that failed together are not retried together, and no wait ever
/// exceeds the nominal one (nor so the cap).
pub fn delay(n: u32, cap: Duration, rng: &mut impl Rng) -> Duration {
    let d = nominal(n, cap);
    d.mul_f64(rng.gen_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nominal_waits_start_within_two_seconds_and_double_up_to_the_cap() {
        assert!(nominal(1, DEFAULT_MAX) <= Duration::from_secs(2));
        let waits: Vec<u64> = (1..=11)
            .map(|n| nominal(n, DEFAULT_MAX).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        // Far out, no overflow: still the cap.
        assert_eq!(nominal(u32::MAX, DEFAULT_MAX), DEFAULT_MAX);
        // A small cap (tests use 1 s) caps from the start.
        assert_eq!(nominal(1, Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(nominal(9, Duration::from_secs(1)), Duration::from_secs(1));
    }

    #[test]
    fn jittered_waits_stay_between_half_and_all_of_the_nominal_wait() {
        let mut rng = rand::thread_rng();
        for n in 1..=12 {
            let d = nominal(n, DEFAULT_MAX);
            let mut spread = (Duration::MAX, Duration::ZERO);
            for _ in 0..200 {
                let j = delay(n, DEFAULT_MAX, &mut rng);
                assert!(
                    j >= d / 2 && j <= d,
                    "retry {n}: {j:?} outside [{:?}, {d:?}]",
                    d / 2
                );
                spread = (spread.0.min(j), spread.1.max(j));
            }
            // Jitter really varies the wait.
            assert!(
                spread.1 - spread.0 > d / 10,
                "retry {n}: no spread {spread:?}"
            );
        }
        assert!(delay(1, DEFAULT_MAX, &mut rng) <= Duration::from_secs(2));
    }
}
