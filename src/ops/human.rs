//! Times and durations the way kubectl shows them to people: `12d`, `5h`, `3m`, `40s`; dates as `2025-06-02`.

use std::time::Duration;

use jiff::Timestamp;

const DAY: u64 = 86_400;

/// The largest whole unit of a duration: `12d`, `5h`, `3m`, `40s`.
pub fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s >= DAY => format!("{}d", s / DAY),
        _ if s >= 3_600 => format!("{}h", s / 3_600),
        _ if s >= 60 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// A period as the API writes it: `90d`, `1d12h`, `1h30m`, `45s`.
pub fn period(d: Duration) -> String {
    crate::duration::format(d)
}

/// How long ago `t` was at `now` (`12d`), never negative: a time slightly ahead is clock skew.
pub fn ago(now: Timestamp, t: Timestamp) -> String {
    short(elapsed(now, t))
}

/// `now - t`, zero when `t` is ahead.
pub fn elapsed(now: Timestamp, t: Timestamp) -> Duration {
    let d = now.duration_since(t);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// `in 3d` or `3d ago`, relative to now.
pub fn relative(now: Timestamp, t: Timestamp) -> String {
    if t > now {
        format!("in {}", short(t.duration_since(now).unsigned_abs()))
    } else {
        format!("{} ago", ago(now, t))
    }
}

/// The UTC date: `2025-06-02`.
pub fn date(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d").to_string()
}

/// The UTC time to the second: `2025-06-02T10:00:00Z`.
pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A terminal colour for a table cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Red,
    Yellow,
    Green,
}

impl Colour {
    fn code(self) -> &'static str {
        match self {
            Colour::Red => "\x1b[31m",
            Colour::Yellow => "\x1b[33m",
            Colour::Green => "\x1b[32m",
        }
    }
}

/// A table cell: its text, and a colour used only when colour is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub colour: Option<Colour>,
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell { text, colour: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::from(text.to_string())
    }
}

/// Columns aligned as kubectl aligns them (three spaces apart, the last one not padded). Widths are measured on
/// the plain text, so colour codes never break the alignment.
pub fn table(headers: &[&str], rows: &[Vec<Cell>], colour: bool) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.text.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<(&str, Option<Colour>)>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, ((cell, c), w)) in cells.into_iter().zip(&widths).enumerate() {
            let pad = if i == last { 0 } else { w - cell.chars().count() + 3 };
            match c.filter(|_| colour) {
                Some(c) => text.push_str(&format!("{}{cell}\x1b[0m", c.code())),
                None => text.push_str(cell),
            }
            text.push_str(&" ".repeat(pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| (*h, None)).collect());
    for row in rows {
        line(row.iter().map(|c| (c.text.as_str(), c.colour)).collect());
    }
    out
}

/// Whether stdout gets colour: a terminal, and no `NO_COLOR` (https://no-color.org: set and not empty).
pub fn colour_stdout() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms() {
        assert_eq!(short(Duration::from_secs(0)), "0s");
        assert_eq!(short(Duration::from_secs(59)), "59s");
        assert_eq!(short(Duration::from_secs(60)), "1m");
        assert_eq!(short(Duration::from_secs(3_599)), "59m");
        assert_eq!(short(Duration::from_secs(3_600)), "1h");
        assert_eq!(short(Duration::from_secs(DAY - 1)), "23h");
        assert_eq!(short(Duration::from_secs(12 * DAY + 5)), "12d");
    }

    #[test]
    fn periods_and_relative_times() {
        assert_eq!(period(Duration::from_secs(90 * DAY)), "90d");
        assert_eq!(period(Duration::from_secs(5_400)), "1h30m");
        let now = Timestamp::from_second(1_748_822_400).unwrap();
        let later = Timestamp::from_second(1_748_822_400 + 3 * DAY as i64).unwrap();
        assert_eq!(relative(now, later), "in 3d");
        assert_eq!(relative(later, now), "3d ago");
        assert_eq!(ago(now, later), "0s");
        assert_eq!(date(now), "2025-06-02");
        assert_eq!(rfc3339(now), "2025-06-02T00:00:00Z");
    }

    #[test]
    fn tables_align_on_plain_text() {
        let rows = vec![
            vec![
                Cell::from("a"),
                Cell {
                    text: "OVERDUE".into(),
                    colour: Some(Colour::Red),
                },
                Cell::from("x"),
            ],
            vec![Cell::from("longer"), Cell::from("OK"), Cell::from("")],
        ];
        assert_eq!(
            table(&["NAME", "STATE", "NOTE"], &rows, false),
            "NAME     STATE     NOTE\na        OVERDUE   x\nlonger   OK\n"
        );
        assert_eq!(
            table(&["NAME", "STATE", "NOTE"], &rows, true).lines().nth(1).unwrap(),
            "a        \x1b[31mOVERDUE\x1b[0m   x"
        );
    }
}
