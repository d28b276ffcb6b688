//! When a value is due for rotation: the policy a ManagedSecret's `rotation` block describes, and pure
//! functions of time over it. Time comes in as `jiff::Timestamp` so tests are deterministic.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::{Rotation, RotationCategory, RotationStrategy};
use crate::duration;

const DAY: u64 = 86_400;

/// The shortest period: anything shorter would rotate faster than consumers can restart.
pub const MIN_PERIOD: Duration = Duration::from_secs(10);

/// The longest period, 10 years of 365 days. Longer is almost certainly a typo, and it keeps due times far
/// from the end of jiff's range.
pub const MAX_PERIOD: Duration = Duration::from_secs(3_650 * DAY);

/// Secret data keys are limited to 253 characters.
const MAX_KEY_LEN: usize = 253;

/// The team's rotation table.
pub fn category_period(c: RotationCategory) -> Duration {
    let days = match c {
        RotationCategory::HighRisk => 30,
        RotationCategory::Database => 60,
        RotationCategory::ApiKey => 90,
        RotationCategory::LowRisk => 180,
        RotationCategory::Infrastructure => 365,
    };
    Duration::from_secs(days * DAY)
}

/// A validated rotation policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub period: Duration,
    /// Zero: the replaced value is not kept.
    pub grace: Duration,
    pub strategy: RotationStrategy,
    pub previous_key: String,
}

/// Why a rotation block is invalid. Messages quote the configuration, which holds no secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("rotation sets both period and category: set exactly one")]
    PeriodAndCategory,
    #[error("rotation needs exactly one of period (e.g. 90d) or category")]
    NoPeriod,
    #[error("rotation.period {input:?}: {why}")]
    Period { input: String, why: String },
    #[error("rotation.gracePeriod {input:?}: {why}")]
    Grace { input: String, why: String },
    #[error("rotation.previousKey {key:?}: {why}")]
    PreviousKey { key: String, why: &'static str },
}

impl ScheduleError {
    /// A bounded label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            ScheduleError::PeriodAndCategory | ScheduleError::NoPeriod | ScheduleError::Period { .. } => {
                "invalid_rotation_period"
            }
            ScheduleError::Grace { .. } => "invalid_grace_period",
            ScheduleError::PreviousKey { .. } => "invalid_previous_key",
        }
    }
}

/// Parses and validates `rotation` for a Secret whose value lives under `target_key`. Admission checks most of
/// this too; this is the check the controller relies on.
pub fn policy(rotation: &Rotation, target_key: &str) -> Result<Policy, ScheduleError> {
    let period = match (&rotation.period, rotation.category) {
        (Some(_), Some(_)) => return Err(ScheduleError::PeriodAndCategory),
        (None, None) => return Err(ScheduleError::NoPeriod),
        (None, Some(c)) => category_period(c),
        (Some(input), None) => {
            let err = |why: String| ScheduleError::Period {
                input: input.clone(),
                why,
            };
            let p = duration::parse(input).map_err(|e| err(duration_why(&e)))?;
            if p.is_zero() {
                return Err(err(format!(
                    "zero; a period must be at least {}",
                    format_duration(MIN_PERIOD)
                )));
            }
            if p < MIN_PERIOD {
                return Err(err(format!("shorter than the minimum {}", format_duration(MIN_PERIOD))));
            }
            if p > MAX_PERIOD {
                return Err(err(format!(
                    "longer than the maximum {} (10 years)",
                    format_duration(MAX_PERIOD)
                )));
            }
            p
        }
    };

    let grace = match &rotation.grace_period {
        None => Duration::ZERO,
        Some(input) => {
            let err = |why: String| ScheduleError::Grace {
                input: input.clone(),
                why,
            };
            let g = duration::parse(input).map_err(|e| err(duration_why(&e)))?;
            if g >= period {
                return Err(err(format!(
                    "must be shorter than the rotation period ({})",
                    format_duration(period)
                )));
            }
            g
        }
    };

    let previous_key = match &rotation.previous_key {
        Some(k) => k.clone(),
        None => format!("{target_key}_PREVIOUS"),
    };
    let key_err = |why| ScheduleError::PreviousKey {
        key: previous_key.clone(),
        why,
    };
    if previous_key == target_key {
        // The old value would overwrite the new one under the same key.
        return Err(key_err(
            "is the target key itself; choose a different key for the replaced value",
        ));
    }
    if previous_key.is_empty() {
        return Err(key_err("is empty"));
    }
    if previous_key.len() > MAX_KEY_LEN {
        return Err(key_err(
            "is longer than 253 characters (a long target key makes the default too long)",
        ));
    }
    if !previous_key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(key_err(
            "is not a valid Secret data key: use letters, digits, '-', '_' or '.'",
        ));
    }

    Ok(Policy {
        period,
        grace,
        strategy: rotation.strategy,
        previous_key,
    })
}

/// The reason from a duration parse error, without repeating the input (our message quotes it already).
fn duration_why(e: &duration::DurationError) -> String {
    format!("{} (use forms such as 90d, 12h, 1h30m, 45s)", e.why)
}

/// Formats whole seconds the way the API writes durations, e.g. `1d2h`, `90d`, `0s`.
fn format_duration(d: Duration) -> String {
    crate::duration::format(d)
}

/// When the next rotation is due: the last rotation, or the ManagedSecret's creation when it was never
/// rotated, plus the period. Saturates at `Timestamp::MAX`.
pub fn next_due(last_rotation: Option<Timestamp>, created: Timestamp, period: Duration) -> Timestamp {
    // saturating_add fails only for calendar spans, never for a std Duration.
    last_rotation
        .unwrap_or(created)
        .saturating_add(period)
        .unwrap_or(Timestamp::MAX)
}

/// Where a value stands against its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationState {
    pub due_at: Timestamp,
    /// `now >= due_at`.
    pub due: bool,
    /// Due, and nobody is going to rotate it: the strategy is Notify or the last attempt failed.
    pub overdue: bool,
    /// How long until due, when not yet due (for an exact requeue).
    pub until_due: Option<Duration>,
}

/// Evaluates the policy at `now`. `failing`: the last rotation attempt failed.
pub fn state(
    now: Timestamp,
    last_rotation: Option<Timestamp>,
    created: Timestamp,
    policy: &Policy,
    failing: bool,
) -> RotationState {
    let due_at = next_due(last_rotation, created, policy.period);
    let due = now >= due_at;
    RotationState {
        due_at,
        due,
        overdue: due && (policy.strategy == RotationStrategy::Notify || failing),
        until_due: (!due).then(|| due_at.duration_since(now).unsigned_abs()),
    }
}

/// Until when the replaced value is kept under the previous key; None when it is not kept at all.
pub fn grace_until(rotated_at: Timestamp, grace: Duration) -> Option<Timestamp> {
    if grace.is_zero() {
        return None;
    }
    Some(rotated_at.saturating_add(grace).unwrap_or(Timestamp::MAX))
}

/// The age in days of a value last rotated (or created) at `last_rotation_or_created`. Never negative: a
/// timestamp slightly in the future is clock skew, not a negative age.
pub fn age_days(now: Timestamp, last_rotation_or_created: Timestamp) -> f64 {
    (now.duration_since(last_rotation_or_created).as_secs_f64() / DAY as f64).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Seconds after a fixed Monday midnight UTC (2025-06-02).
    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_748_822_400 + secs).unwrap()
    }

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * DAY)
    }

    fn rot(period: Option<&str>, category: Option<RotationCategory>) -> Rotation {
        Rotation {
            period: period.map(str::to_string),
            category,
            ..Rotation::default()
        }
    }

    fn pol(period: Duration, strategy: RotationStrategy) -> Policy {
        Policy {
            period,
            grace: Duration::ZERO,
            strategy,
            previous_key: "K_PREVIOUS".into(),
        }
    }

    #[test]
    fn categories_use_the_team_table() {
        use RotationCategory::*;
        for (c, d) in [
            (HighRisk, 30),
            (Database, 60),
            (ApiKey, 90),
            (LowRisk, 180),
            (Infrastructure, 365),
        ] {
            assert_eq!(category_period(c), days(d), "{c:?}");
            assert_eq!(policy(&rot(None, Some(c)), "K").unwrap().period, days(d), "{c:?}");
        }
    }

    #[test]
    fn defaults() {
        let p = policy(&rot(Some("1h30m"), None), "PASSWORD").unwrap();
        assert_eq!(
            p,
            Policy {
                period: Duration::from_secs(5_400),
                grace: Duration::ZERO,
                strategy: RotationStrategy::Notify,
                previous_key: "PASSWORD_PREVIOUS".into(),
            }
        );
        let r = Rotation {
            grace_period: Some("1h".into()),
            previous_key: Some("old.password".into()),
            strategy: RotationStrategy::Generate,
            ..rot(Some("90d"), None)
        };
        let p = policy(&r, "PASSWORD").unwrap();
        assert_eq!(p.grace, Duration::from_secs(3_600));
        assert_eq!(p.previous_key, "old.password");
        assert_eq!(p.strategy, RotationStrategy::Generate);
        assert_eq!(p.period, days(90));
    }

    #[test]
    fn bounds_are_inclusive() {
        assert_eq!(policy(&rot(Some("10s"), None), "K").unwrap().period, MIN_PERIOD);
        assert_eq!(policy(&rot(Some("3650d"), None), "K").unwrap().period, MAX_PERIOD);
    }

    fn err(r: &Rotation, key: &str) -> (String, &'static str) {
        let e = policy(r, key).unwrap_err();
        (e.to_string(), e.category())
    }

    #[test]
    fn refuses_bad_policies_with_clear_messages() {
        let cases: Vec<(Rotation, &str, &str)> = vec![
            (
                rot(Some("90x"), None),
                r#"rotation.period "90x": unknown unit (use forms such as 90d, 12h, 1h30m, 45s)"#,
                "invalid_rotation_period",
            ),
            (
                rot(Some(""), None),
                r#"rotation.period "": empty (use forms such as 90d, 12h, 1h30m, 45s)"#,
                "invalid_rotation_period",
            ),
            (
                rot(Some("0d"), None),
                r#"rotation.period "0d": zero; a period must be at least 10s"#,
                "invalid_rotation_period",
            ),
            (
                rot(Some("9s"), None),
                r#"rotation.period "9s": shorter than the minimum 10s"#,
                "invalid_rotation_period",
            ),
            (
                rot(Some("3650d1s"), None),
                r#"rotation.period "3650d1s": longer than the maximum 3650d (10 years)"#,
                "invalid_rotation_period",
            ),
            (
                rot(Some("99999999999999999999d"), None),
                r#"rotation.period "99999999999999999999d": number too large (use forms such as 90d, 12h, 1h30m, 45s)"#,
                "invalid_rotation_period",
            ),
            (
                rot(Some("90d"), Some(RotationCategory::ApiKey)),
                "rotation sets both period and category: set exactly one",
                "invalid_rotation_period",
            ),
            (
                rot(None, None),
                "rotation needs exactly one of period (e.g. 90d) or category",
                "invalid_rotation_period",
            ),
            (
                Rotation {
                    grace_period: Some("90d".into()),
                    ..rot(None, Some(RotationCategory::ApiKey))
                },
                r#"rotation.gracePeriod "90d": must be shorter than the rotation period (90d)"#,
                "invalid_grace_period",
            ),
            (
                Rotation {
                    grace_period: Some("2h".into()),
                    ..rot(Some("1h30m"), None)
                },
                r#"rotation.gracePeriod "2h": must be shorter than the rotation period (1h30m)"#,
                "invalid_grace_period",
            ),
            (
                Rotation {
                    grace_period: Some("1w".into()),
                    ..rot(Some("90d"), None)
                },
                r#"rotation.gracePeriod "1w": unknown unit (use forms such as 90d, 12h, 1h30m, 45s)"#,
                "invalid_grace_period",
            ),
            (
                Rotation {
                    previous_key: Some("K".into()),
                    ..rot(Some("90d"), None)
                },
                r#"rotation.previousKey "K": is the target key itself; choose a different key for the replaced value"#,
                "invalid_previous_key",
            ),
            (
                Rotation {
                    previous_key: Some("a/b".into()),
                    ..rot(Some("90d"), None)
                },
                r#"rotation.previousKey "a/b": is not a valid Secret data key: use letters, digits, '-', '_' or '.'"#,
                "invalid_previous_key",
            ),
            (
                Rotation {
                    previous_key: Some(String::new()),
                    ..rot(Some("90d"), None)
                },
                r#"rotation.previousKey "": is empty"#,
                "invalid_previous_key",
            ),
        ];
        for (r, msg, category) in cases {
            assert_eq!(err(&r, "K"), (msg.to_string(), category), "{r:?}");
        }
        // The default previous key of a long target key is too long.
        let long = "k".repeat(250);
        assert_eq!(err(&rot(Some("90d"), None), &long).1, "invalid_previous_key");
    }

    #[test]
    fn grace_zero_is_allowed_and_means_not_kept() {
        let r = Rotation {
            grace_period: Some("0s".into()),
            ..rot(Some("10s"), None)
        };
        assert_eq!(policy(&r, "K").unwrap().grace, Duration::ZERO);
        assert_eq!(grace_until(t(0), Duration::ZERO), None);
        assert_eq!(grace_until(t(0), Duration::from_secs(60)), Some(t(60)));
        assert_eq!(
            grace_until(Timestamp::MAX, Duration::from_secs(60)),
            Some(Timestamp::MAX)
        );
    }

    #[test]
    fn due_from_creation_then_from_last_rotation() {
        assert_eq!(next_due(None, t(0), days(30)), t(30 * 86_400));
        assert_eq!(next_due(Some(t(100)), t(0), days(30)), t(100 + 30 * 86_400));
        assert_eq!(next_due(Some(Timestamp::MAX), t(0), days(30)), Timestamp::MAX);
        assert_eq!(next_due(None, Timestamp::MAX, Duration::MAX), Timestamp::MAX);
        assert_eq!(next_due(None, Timestamp::MIN, Duration::MAX), Timestamp::MAX);
    }

    #[test]
    fn overdue_rules() {
        let period = Duration::from_secs(60);
        for strategy in [
            RotationStrategy::Generate,
            RotationStrategy::Esc,
            RotationStrategy::Notify,
        ] {
            let p = pol(period, strategy);
            for failing in [false, true] {
                let before = state(t(59), None, t(0), &p, failing);
                assert_eq!(
                    before,
                    RotationState {
                        due_at: t(60),
                        due: false,
                        overdue: false,
                        until_due: Some(Duration::from_secs(1)),
                    }
                );
                let at = state(t(60), None, t(0), &p, failing);
                assert!(at.due);
                assert_eq!(at.until_due, None);
                // Nobody rotates a Notify value; a failing rotator is not rotating it either.
                let expect_overdue = strategy == RotationStrategy::Notify || failing;
                assert_eq!(at.overdue, expect_overdue, "{strategy:?} failing={failing}");
            }
        }
    }

    #[test]
    fn age_in_days() {
        assert_eq!(age_days(t(86_400 * 3 / 2), t(0)), 1.5);
        assert_eq!(age_days(t(0), t(0)), 0.0);
        assert_eq!(age_days(t(0), t(10)), 0.0);
        assert!(age_days(Timestamp::MAX, Timestamp::MIN) > 0.0);
    }

    fn ts() -> impl Strategy<Value = Timestamp> {
        (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second()).prop_map(|s| Timestamp::from_second(s).unwrap())
    }

    fn strategy() -> impl Strategy<Value = RotationStrategy> {
        prop_oneof![
            Just(RotationStrategy::Generate),
            Just(RotationStrategy::Esc),
            Just(RotationStrategy::Notify)
        ]
    }

    fn category() -> impl Strategy<Value = RotationCategory> {
        use RotationCategory::*;
        prop_oneof![
            Just(HighRisk),
            Just(Database),
            Just(ApiKey),
            Just(LowRisk),
            Just(Infrastructure)
        ]
    }

    /// Arbitrary text, and text shaped like durations (including overflowing and bad ones).
    fn duration_text() -> impl Strategy<Value = String> {
        prop_oneof![".{0,40}", "([0-9]{1,22}[dhmsx]){1,3}"]
    }

    proptest! {
        #[test]
        fn due_at_is_last_plus_period_exactly(last in ts(), created in ts(), secs in 10u64..=MAX_PERIOD.as_secs()) {
            let period = Duration::from_secs(secs);
            let due = next_due(Some(last), created, period);
            if due != Timestamp::MAX {
                prop_assert_eq!(due.duration_since(last).unsigned_abs(), period);
            } else {
                // Saturated: the exact sum is past the end of time.
                prop_assert!(last.checked_add(period).ok().is_none_or(|d| d == Timestamp::MAX));
            }
            prop_assert_eq!(next_due(None, created, period), next_due(Some(created), last, period));
        }

        #[test]
        fn due_at_is_monotone_in_last(a in ts(), b in ts(), created in ts(), secs in 0u64..=u64::MAX) {
            let period = Duration::from_secs(secs);
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(next_due(Some(lo), created, period) <= next_due(Some(hi), created, period));
        }

        #[test]
        fn due_exactly_from_due_at(
            now in ts(),
            last in proptest::option::of(ts()),
            created in ts(),
            secs in 10u64..=MAX_PERIOD.as_secs(),
            s in strategy(),
            failing in any::<bool>(),
        ) {
            let p = pol(Duration::from_secs(secs), s);
            let st = state(now, last, created, &p, failing);
            prop_assert_eq!(st.due_at, next_due(last, created, p.period));
            prop_assert_eq!(st.due, now >= st.due_at);
            prop_assert!(!st.overdue || st.due);
            match st.until_due {
                Some(d) => {
                    prop_assert!(!st.due);
                    prop_assert!(!d.is_zero());
                    prop_assert_eq!(now.checked_add(d).ok(), Some(st.due_at));
                }
                None => prop_assert!(st.due),
            }
            // Just before due_at it is not due; at and after, it is.
            if let Ok(before) = st.due_at.checked_sub(Duration::from_nanos(1)) {
                prop_assert!(!state(before, last, created, &p, failing).due);
            }
            prop_assert!(state(st.due_at, last, created, &p, failing).due);
            prop_assert!(state(Timestamp::MAX, last, created, &p, failing).due);
        }

        #[test]
        fn policy_never_panics(
            period in proptest::option::of(duration_text()),
            grace in proptest::option::of(duration_text()),
            category in proptest::option::of(category()),
            previous_key in proptest::option::of(".{0,20}"),
            target in "[-a-zA-Z_.]{0,20}"
        ) {
            let r = Rotation { period, category, grace_period: grace, previous_key, ..Rotation::default() };
            if let Ok(p) = policy(&r, &target) {
                prop_assert!(p.period >= MIN_PERIOD && p.period <= MAX_PERIOD);
                prop_assert!(p.grace < p.period);
                prop_assert_ne!(&p.previous_key, &target);
                let st = state(Timestamp::MAX, None, Timestamp::MIN, &p, false);
                prop_assert!(st.due);
            }
        }

        #[test]
        fn valid_durations_parse_within_bounds(n in 0u64..100_000, unit in prop_oneof![Just('d'), Just('h'), Just('m'), Just('s')]) {
            let input = format!("{n}{unit}");
            let secs = n * match unit { 'd' => DAY, 'h' => 3_600, 'm' => 60, _ => 1 };
            let res = policy(&rot(Some(&input), None), "K");
            let in_bounds = (MIN_PERIOD.as_secs()..=MAX_PERIOD.as_secs()).contains(&secs);
            prop_assert_eq!(res.is_ok(), in_bounds, "{}", input);
            if let Ok(p) = res {
                prop_assert_eq!(p.period, Duration::from_secs(secs));
            }
        }

        #[test]
        fn grace_until_never_panics(at in ts(), secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let grace = Duration::new(secs, nanos);
            match grace_until(at, grace) {
                None => prop_assert!(grace.is_zero()),
                Some(until) => prop_assert!(until > at || until == Timestamp::MAX),
            }
            let _ = age_days(at, at);
        }
    }
}
