//! When a reconcile reads and when it comes back: refresh ticks aligned to the wall clock (so every
//! ManagedSecret with the same interval refreshes in the same tick and shares one ESC snapshot), each object's
//! refresh spread within its tick, stamped refresh requests, and exponential backoff after failures.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::api::STAMPED_REFRESH_PREFIX;

/// How far into the current refresh tick we are.
fn into_tick(interval: Duration) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let period = interval.as_millis().max(1000);
    Duration::from_millis(u64::try_from(now % period).unwrap_or(0))
}

/// When the current refresh tick started.
pub fn tick_start(interval: Duration) -> Instant {
    let now = Instant::now();
    now.checked_sub(into_tick(interval)).unwrap_or(now)
}

/// How long until the next refresh tick.
pub fn until_next_tick(interval: Duration) -> Duration {
    // A little past the boundary, so the snapshot taken then counts as this tick's.
    interval.max(Duration::from_secs(1)).saturating_sub(into_tick(interval)) + Duration::from_millis(50)
}

/// The longest a refresh is spread past its tick: half the interval, at most a minute.
const MAX_SPREAD: Duration = Duration::from_secs(60);

/// How long until this object's next refresh: the next tick, plus an offset of its own (from its uid, the same
/// every time) within the first half of the interval, at most [`MAX_SPREAD`]. Every object with the interval
/// still reads the tick's one snapshot (`tick_start`: any snapshot taken since the tick started will do), but
/// they no longer all wake at its first instant: at 10,000 objects a tick's refreshes come over seconds, and a
/// new object waits behind a few of them, not all.
pub fn until_refresh(interval: Duration, uid: &str) -> Duration {
    use std::hash::{Hash, Hasher};
    let spread = (interval / 2).min(MAX_SPREAD);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    let millis = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX).max(1);
    until_next_tick(interval) + Duration::from_millis(h.finish() % millis)
}

/// The moment a stamped refresh request (`webhook:<RFC 3339>`) was made, as an `Instant`.
pub fn requested_since(request: &str) -> Option<Instant> {
    let at: jiff::Timestamp = request.strip_prefix(STAMPED_REFRESH_PREFIX)?.parse().ok()?;
    let ago = Duration::try_from(jiff::Timestamp::now().duration_since(at)).unwrap_or_default();
    Instant::now().checked_sub(ago)
}

/// Exponential backoff for an object's n-th consecutive failure: 5s doubling, at most half the refresh
/// interval (and at most 10 minutes), never shorter than what the source asked for. Half, so that once the
/// source is back every object has synced again within one refresh interval (issue 16's ESC outage: capped at
/// the whole interval, the last objects took exactly one interval, or a little more). Retries cost ESC nothing
/// extra: a failed snapshot is shared per environment (`source::esc`).
pub fn backoff(n: u32, retry_after: Option<Duration>, interval: Duration) -> Duration {
    let exp = Duration::from_secs(5u64.saturating_mul(1 << n.saturating_sub(1).min(10)));
    let cap = (interval / 2).min(Duration::from_secs(600)).max(Duration::from_secs(5));
    exp.min(cap).max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_honors_retry_after() {
        let hour = Duration::from_secs(3600);
        assert_eq!(backoff(1, None, hour), Duration::from_secs(5));
        assert_eq!(backoff(2, None, hour), Duration::from_secs(10));
        assert_eq!(backoff(20, None, hour), Duration::from_secs(600));
        assert_eq!(backoff(20, None, Duration::from_secs(30)), Duration::from_secs(15));
        assert_eq!(backoff(20, None, Duration::from_secs(10)), Duration::from_secs(5));
        assert_eq!(backoff(1, Some(Duration::from_secs(42)), hour), Duration::from_secs(42));
    }

    #[test]
    fn stamped_refresh_requests_reach_back_to_their_time() {
        let at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5);
        let since = requested_since(&format!("webhook:{at}")).unwrap();
        let ago = since.elapsed();
        assert!(ago >= Duration::from_secs(5) && ago < Duration::from_secs(7), "{ago:?}");
        assert!(requested_since("1").is_none());
        assert!(requested_since("webhook:yesterday").is_none());
    }

    #[test]
    fn refreshes_are_spread_over_the_first_half_of_the_tick() {
        let interval = Duration::from_secs(10);
        let offsets: Vec<Duration> = (0..200)
            .map(|i| {
                let uid = format!("uid-{i}");
                let d = until_refresh(interval, &uid);
                // The same object always gets the same offset past the tick.
                let again = until_refresh(interval, &uid);
                assert!(d.abs_diff(again) < Duration::from_millis(100), "{d:?} {again:?}");
                d.saturating_sub(until_next_tick(interval))
            })
            .collect();
        assert!(
            offsets.iter().all(|o| *o <= Duration::from_millis(5_100)),
            "{offsets:?}"
        );
        let late = offsets.iter().filter(|o| **o > Duration::from_millis(2_500)).count();
        assert!(
            (50..150).contains(&late),
            "spread over the window: {late} of 200 in its second half"
        );
        let hour = until_refresh(Duration::from_secs(3600), "x") - until_next_tick(Duration::from_secs(3600));
        assert!(hour <= Duration::from_secs(61), "at most a minute: {hour:?}");
    }

    #[test]
    fn ticks_are_aligned() {
        let d = until_next_tick(Duration::from_secs(60));
        assert!(d <= Duration::from_millis(60_050) && d >= Duration::from_millis(50));
        assert!(tick_start(Duration::from_secs(60)) <= Instant::now());
    }
}
