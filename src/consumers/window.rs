//! Restart windows: when keyward may START a restart (rollouts already running always continue).
//!
//! `{days: [Mon, Tue], start: "22:00", end: "06:00", timeZone: "Europe/Berlin"}`: local wall-clock times in an
//! IANA zone, so a window follows daylight saving time. A window whose end is not after its start runs past
//! midnight and belongs to the day it opens on. The zone database is jiff's: the system's when present, else
//! the copy bundled into the binary (feature `tzdb-bundle-always`), so windows work in images without
//! `/usr/share/zoneinfo`.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A restart window as written in configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartWindowSpec {
    /// `Mon` … `Sun` (or full names), or ranges such as `Mon-Fri`.
    pub days: Vec<String>,
    /// `HH:MM`, 24-hour.
    pub start: String,
    /// `HH:MM`, 24-hour; `24:00` is the end of the day; not after `start` means the next day.
    pub end: String,
    /// An IANA time zone such as `Europe/Berlin` or `UTC`.
    pub time_zone: String,
}

/// Why a restart window is invalid. Messages quote only configuration, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("days is empty: name at least one of Mon, Tue, Wed, Thu, Fri, Sat, Sun")]
    NoDays,
    #[error("unknown day {0:?}: use Mon, Tue, Wed, Thu, Fri, Sat, Sun or a range such as Mon-Fri")]
    Day(String),
    #[error("{field} {input:?} is not a time: use HH:MM, 24-hour (00:00 to 23:59; end may be 24:00)")]
    Time { field: &'static str, input: String },
    #[error("start and end are both {0}: a window needs a length (use 00:00 to 24:00 for a whole day)")]
    Empty(String),
    #[error("unknown time zone {0:?}: use an IANA name such as Europe/Berlin or UTC")]
    TimeZone(String),
}

impl WindowError {
    /// A bounded label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            WindowError::NoDays | WindowError::Day(_) => "invalid_window_days",
            WindowError::Time { .. } | WindowError::Empty(_) => "invalid_window_time",
            WindowError::TimeZone(_) => "unknown_time_zone",
        }
    }
}

const MINUTES_PER_DAY: u16 = 24 * 60;

/// A validated restart window.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartWindow {
    /// Bit `i` set: the window opens on the weekday `i` days after Monday.
    days: u8,
    /// Minutes after local midnight, `start` in `0..1440`, `end` in `1..=1440`.
    start: u16,
    end: u16,
    tz: TimeZone,
}

impl RestartWindow {
    pub fn parse(spec: &RestartWindowSpec) -> Result<Self, WindowError> {
        let mut days = 0u8;
        for d in &spec.days {
            days |= parse_days(d)?;
        }
        if days == 0 {
            return Err(WindowError::NoDays);
        }
        let start = parse_minutes(&spec.start, false).ok_or_else(|| WindowError::Time {
            field: "start",
            input: spec.start.clone(),
        })?;
        let end = parse_minutes(&spec.end, true).ok_or_else(|| WindowError::Time {
            field: "end",
            input: spec.end.clone(),
        })?;
        if start == end {
            return Err(WindowError::Empty(spec.start.clone()));
        }
        let tz = TimeZone::get(spec.time_zone.trim()).map_err(|_| WindowError::TimeZone(spec.time_zone.clone()))?;
        Ok(RestartWindow { days, start, end, tz })
    }

    /// Whether a restart may start at `t`.
    pub fn is_open(&self, t: Timestamp) -> bool {
        let local = t.to_zoned(self.tz.clone());
        let minute = u16::from(local.hour().unsigned_abs()) * 60 + u16::from(local.minute().unsigned_abs());
        let today = self.has_day(local.weekday());
        if self.start < self.end {
            today && self.start <= minute && minute < self.end
        } else {
            (today && minute >= self.start) || (self.has_day(local.weekday().previous()) && minute < self.end)
        }
    }

    /// The first instant at or after `t` at which the window is open; `None` only if it never opens within the
    /// next week (possible only for a window wholly inside a daylight-saving gap).
    pub fn next_open(&self, t: Timestamp) -> Option<Timestamp> {
        if self.is_open(t) {
            return Some(t);
        }
        let today = t.to_zoned(self.tz.clone()).date();
        // Eight days: today's opening may be past, and the same weekday a week on must still be found.
        (0..=8)
            .filter_map(|n| today.checked_add(n.days()).ok())
            .filter(|d| self.has_day(d.weekday()))
            .filter_map(|d| self.opening_on(d))
            .find(|&open| open > t && self.is_open(open))
    }

    fn has_day(&self, d: Weekday) -> bool {
        self.days & day_bit(d) != 0
    }

    /// The instant the window opens on local date `d`: the start time, or, when daylight saving skips it, the
    /// end of the gap (the first instant whose local time is past the start).
    fn opening_on(&self, d: Date) -> Option<Timestamp> {
        let time = Time::new((self.start / 60) as i8, (self.start % 60) as i8, 0, 0).ok()?;
        let ambiguous = self.tz.to_ambiguous_timestamp(d.to_datetime(time));
        match ambiguous.offset() {
            AmbiguousOffset::Gap { .. } => {
                let before_gap = ambiguous.earlier().ok()?;
                self.tz.following(before_gap).next().map(|tr| tr.timestamp())
            }
            // In a fold the first of the two instants opens the window.
            _ => ambiguous.earlier().ok(),
        }
    }
}

/// Whether any window is open at `t`; no windows means always.
pub fn any_open(windows: &[RestartWindow], t: Timestamp) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.is_open(t))
}

/// The first instant at or after `t` at which some window is open; `t` itself when there are no windows.
pub fn next_opening(windows: &[RestartWindow], t: Timestamp) -> Option<Timestamp> {
    if windows.is_empty() {
        return Some(t);
    }
    windows.iter().filter_map(|w| w.next_open(t)).min()
}

fn day_bit(d: Weekday) -> u8 {
    1 << d.to_monday_zero_offset()
}

const DAYS: [(&str, &str, Weekday); 7] = [
    ("mon", "monday", Weekday::Monday),
    ("tue", "tuesday", Weekday::Tuesday),
    ("wed", "wednesday", Weekday::Wednesday),
    ("thu", "thursday", Weekday::Thursday),
    ("fri", "friday", Weekday::Friday),
    ("sat", "saturday", Weekday::Saturday),
    ("sun", "sunday", Weekday::Sunday),
];

fn parse_day(s: &str) -> Option<Weekday> {
    let s = s.trim().to_ascii_lowercase();
    DAYS.iter()
        .find(|(short, long, _)| s == *short || s == *long)
        .map(|d| d.2)
}

/// One day, or a range `Mon-Fri` (which may wrap: `Sat-Mon`).
fn parse_days(s: &str) -> Result<u8, WindowError> {
    let err = || WindowError::Day(s.to_string());
    let Some((from, to)) = s.split_once('-') else {
        return parse_day(s).map(day_bit).ok_or_else(err);
    };
    let (mut d, to) = (parse_day(from).ok_or_else(err)?, parse_day(to).ok_or_else(err)?);
    let mut bits = day_bit(d);
    while d != to {
        d = d.next();
        bits |= day_bit(d);
    }
    Ok(bits)
}

/// `H:MM` or `HH:MM` to minutes after midnight; `24:00` only as an end.
fn parse_minutes(s: &str, is_end: bool) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let digits =
        |x: &str, n: std::ops::RangeInclusive<usize>| n.contains(&x.len()) && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(h, 1..=2) || !digits(m, 2..=2) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if is_end => Some(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(days: &[&str], start: &str, end: &str, tz: &str) -> RestartWindowSpec {
        RestartWindowSpec {
            days: days.iter().map(|d| d.to_string()).collect(),
            start: start.into(),
            end: end.into(),
            time_zone: tz.into(),
        }
    }

    fn window(days: &[&str], start: &str, end: &str, tz: &str) -> RestartWindow {
        RestartWindow::parse(&spec(days, start, end, tz)).unwrap()
    }

    /// An instant given as local time in a zone.
    fn at(local: &str, tz: &str) -> Timestamp {
        local
            .parse::<jiff::civil::DateTime>()
            .unwrap()
            .to_zoned(TimeZone::get(tz).unwrap())
            .unwrap()
            .timestamp()
    }

    #[test]
    fn the_zone_database_is_there() {
        // The bundled copy guarantees this even without /usr/share/zoneinfo.
        assert!(TimeZone::get("Europe/Berlin").is_ok());
        assert!(jiff::tz::TimeZoneDatabase::bundled().get("America/New_York").is_ok());
    }

    #[test]
    fn parses_and_explains_errors() {
        let ok = serde_json::from_str::<RestartWindowSpec>(
            r#"{"days": ["Mon-Fri", "sun"], "start": "9:00", "end": "24:00", "timeZone": "Europe/Berlin"}"#,
        )
        .unwrap();
        let w = RestartWindow::parse(&ok).unwrap();
        assert_eq!(w.days, 0b101_1111);
        assert_eq!((w.start, w.end), (540, 1440));
        assert_eq!(window(&["Sat-Mon"], "00:00", "01:00", "UTC").days, 0b110_0001);
        assert_eq!(window(&["Monday", "FRIDAY"], "00:00", "01:00", "UTC").days, 0b1_0001);

        let cases = [
            (
                spec(&[], "01:00", "02:00", "UTC"),
                "invalid_window_days",
                "days is empty",
            ),
            (spec(&["Mo"], "01:00", "02:00", "UTC"), "invalid_window_days", "\"Mo\""),
            (
                spec(&["Mon-Fry"], "01:00", "02:00", "UTC"),
                "invalid_window_days",
                "\"Mon-Fry\"",
            ),
            (
                spec(&["Mon"], "1:0", "02:00", "UTC"),
                "invalid_window_time",
                "start \"1:0\"",
            ),
            (
                spec(&["Mon"], "24:00", "02:00", "UTC"),
                "invalid_window_time",
                "start \"24:00\"",
            ),
            (
                spec(&["Mon"], "01:00", "25:00", "UTC"),
                "invalid_window_time",
                "end \"25:00\"",
            ),
            (spec(&["Mon"], "01:00", "01:60", "UTC"), "invalid_window_time", "end"),
            (spec(&["Mon"], "01:00", "+1:00", "UTC"), "invalid_window_time", "end"),
            (
                spec(&["Mon"], "01:00", "01:00", "UTC"),
                "invalid_window_time",
                "needs a length",
            ),
            (
                spec(&["Mon"], "00:00", "24:00", "Mars/Olympus"),
                "unknown_time_zone",
                "Mars/Olympus",
            ),
            (spec(&["Mon"], "00:00", "24:00", ""), "unknown_time_zone", "IANA"),
        ];
        for (s, category, text) in cases {
            let e = RestartWindow::parse(&s).unwrap_err();
            assert_eq!(e.category(), category, "{s:?}");
            assert!(e.to_string().contains(text), "{e} lacks {text}");
        }
    }

    #[test]
    fn daytime_window() {
        // 2025-06-02 is a Monday.
        let w = window(&["Mon-Fri"], "09:00", "17:00", "Europe/Berlin");
        let b = |s| at(s, "Europe/Berlin");
        assert!(!w.is_open(b("2025-06-02T08:59:59")));
        assert!(w.is_open(b("2025-06-02T09:00")));
        assert!(w.is_open(b("2025-06-02T16:59:59")));
        assert!(!w.is_open(b("2025-06-02T17:00")));
        assert!(!w.is_open(b("2025-06-07T12:00"))); // Saturday
        assert_eq!(w.next_open(b("2025-06-02T08:00")), Some(b("2025-06-02T09:00")));
        assert_eq!(w.next_open(b("2025-06-02T12:00")), Some(b("2025-06-02T12:00")));
        assert_eq!(w.next_open(b("2025-06-02T18:00")), Some(b("2025-06-03T09:00")));
        assert_eq!(w.next_open(b("2025-06-06T18:00")), Some(b("2025-06-09T09:00"))); // Friday evening -> Monday
        // Same instant seen from UTC: Berlin is UTC+2 in June.
        assert!(w.is_open(at("2025-06-02T07:30", "UTC")));
    }

    #[test]
    fn overnight_window_belongs_to_its_opening_day() {
        let w = window(&["Fri"], "22:00", "06:00", "UTC");
        let u = |s| at(s, "UTC");
        assert!(w.is_open(u("2025-06-06T23:00"))); // Friday night
        assert!(w.is_open(u("2025-06-07T05:59"))); // Saturday morning
        assert!(!w.is_open(u("2025-06-07T06:00")));
        assert!(!w.is_open(u("2025-06-06T05:00"))); // Friday morning belongs to Thursday
        assert!(!w.is_open(u("2025-06-07T23:00"))); // Saturday night
        assert_eq!(w.next_open(u("2025-06-07T06:00")), Some(u("2025-06-13T22:00")));
        assert_eq!(w.next_open(u("2025-06-06T21:00")), Some(u("2025-06-06T22:00")));
        // Just after the only opening of the week: the same weekday a week on, not missed.
        let w = window(&["Mon"], "09:00", "10:00", "UTC");
        assert_eq!(w.next_open(u("2025-06-02T10:30")), Some(u("2025-06-09T09:00")));
    }

    #[test]
    fn daylight_saving_time() {
        let b = |s| at(s, "Europe/Berlin");
        // 2025-03-30 (Sunday): 02:00 jumps to 03:00. A window opening at 02:30 opens when the gap ends.
        let w = window(&["Sun"], "02:30", "05:00", "Europe/Berlin");
        let gap_end = "2025-03-30T01:00:00Z".parse::<Timestamp>().unwrap();
        assert_eq!(w.next_open(b("2025-03-29T12:00")), Some(gap_end));
        assert!(w.is_open(gap_end));
        // A window wholly inside the gap does not open that day; next Sunday it does.
        let w = window(&["Sun"], "02:10", "02:50", "Europe/Berlin");
        assert_eq!(w.next_open(b("2025-03-29T12:00")), Some(b("2025-04-06T02:10")));
        // 2025-10-26 (Sunday): 03:00 falls back to 02:00. The window opens at the first 02:30.
        let w = window(&["Sun"], "02:30", "04:00", "Europe/Berlin");
        let first = "2025-10-26T00:30:00Z".parse::<Timestamp>().unwrap();
        assert_eq!(w.next_open(b("2025-10-25T12:00")), Some(first));
        // Wall-clock hours: a 09:00 window opens at 07:00 UTC in summer and 08:00 UTC in winter.
        let w = window(&["Mon"], "09:00", "10:00", "Europe/Berlin");
        assert_eq!(
            w.next_open(at("2025-06-01T00:00", "UTC")),
            Some("2025-06-02T07:00:00Z".parse().unwrap())
        );
        assert_eq!(
            w.next_open(at("2025-12-01T00:00", "UTC")),
            Some("2025-12-01T08:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn several_windows() {
        let ws = [
            window(&["Sat"], "10:00", "11:00", "UTC"),
            window(&["Tue"], "01:00", "02:00", "America/New_York"),
        ];
        let u = |s| at(s, "UTC");
        assert!(any_open(&[], u("2025-06-02T00:00")));
        assert_eq!(next_opening(&[], u("2025-06-02T00:00")), Some(u("2025-06-02T00:00")));
        assert!(!any_open(&ws, u("2025-06-02T00:00")));
        // Tuesday 01:00 in New York (UTC-4) comes before Saturday.
        assert_eq!(next_opening(&ws, u("2025-06-02T00:00")), Some(u("2025-06-03T05:00")));
        assert_eq!(next_opening(&ws, u("2025-06-03T06:00")), Some(u("2025-06-07T10:00")));
        assert!(any_open(&ws, u("2025-06-07T10:30")));
    }
}
