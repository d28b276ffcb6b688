//! Waits between retries of outbound calls (ESC, GitHub).

use std::time::Duration;

use rand::RngExt;

/// 200ms, 400ms, 800ms ... (capped at 12.8s) with ±50% jitter, so that many clients do not retry in step.
pub fn jittered(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << attempt.min(6));
    let jitter = rand::rng().random_range(base / 2..=base + base / 2);
    Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter() {
        for a in 0..5 {
            let d = jittered(a).as_millis() as u64;
            let base = 200 * (1 << a);
            assert!(d >= base / 2 && d <= base + base / 2, "{a}: {d}");
        }
    }
}
