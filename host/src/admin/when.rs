//! Times and durations on the admin command line: `--at 2026-11-29 14:30`,
//! `--at 2026-11-29T14:30:00Z`, `--stale 26h`, and RFC 3339 UTC in every report.
//!
//! One rule for every `--at` (`ls`, `cat`, `restore`, ...): a time is UTC unless it
//! says otherwise with `Z` or a numeric offset (`+01:00`); a bare number is Unix
//! seconds. Local time is never guessed: the same string picks the same run on every
//! machine and in every command.
#![forbid(unsafe_code)]

use crate::error::{Error, Result};
use crate::time::{civil_from_days, split_unix, unix_from_civil};

/// Unix seconds as RFC 3339 in UTC: `2026-11-29T21:51:56Z`.
pub fn format_time(t: i64) -> String {
    let (days, s) = split_unix(t);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn bad_time(s: &str) -> Error {
    Error::refused(format!(
        "time {s:?}: use RFC 3339 (2026-11-29T14:30:00Z), YYYY-MM-DD[ HH:MM[:SS]] \
         (UTC unless followed by Z or +HH:MM) or Unix seconds"
    ))
}

fn num(s: &str, len: usize) -> Option<i64> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Parse a time for `--at`: Unix seconds, or `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]` or
/// `YYYY-MM-DDTHH:MM[:SS]`, followed by `Z`, `+HH:MM`/`-HH:MM`, or nothing (UTC).
pub fn parse_time(s: &str) -> Result<i64> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad_time(s));
    }
    let (body, zone) = split_zone(t);
    let (date, clock) = match body.find(['T', 't', ' ']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mut dp = date.split('-');
    let (Some(y), Some(mo), Some(d), None) = (dp.next(), dp.next(), dp.next(), dp.next()) else {
        return Err(bad_time(s));
    };
    let (y, mo, d) = match (num(y, 4), num(mo, 2), num(d, 2)) {
        (Some(y), Some(mo), Some(d)) if (1..=12).contains(&mo) && (1..=31).contains(&d) => {
            (y, mo, d)
        }
        _ => return Err(bad_time(s)),
    };
    let (mut h, mut mi, mut se) = (0, 0, 0);
    if let Some(c) = clock {
        // Fractional seconds are dropped: runs are whole seconds.
        let c = c.split('.').next().unwrap_or(c);
        let parts: Vec<&str> = c.split(':').collect();
        let ok = match parts.as_slice() {
            [hh, mm] => num(hh, 2).zip(num(mm, 2)).map(|(a, b)| (a, b, 0)),
            [hh, mm, ss] => match (num(hh, 2), num(mm, 2), num(ss, 2)) {
                (Some(a), Some(b), Some(c)) => Some((a, b, c)),
                _ => None,
            },
            _ => None,
        };
        let Some((a, b, c)) = ok.filter(|&(a, b, c)| a < 24 && b < 60 && c < 61) else {
            return Err(bad_time(s));
        };
        (h, mi, se) = (a, b, c);
    }
    let naive = unix_from_civil(y, mo, d, h, mi, se);
    match zone {
        Some(offset) => Ok(naive - offset.ok_or_else(|| bad_time(s))?),
        None => Ok(naive),
    }
}

/// Split a trailing zone off: `Some(Some(offset seconds))` for `Z`/`±HH:MM`/`±HHMM`,
/// `Some(None)` for a malformed one, `None` when there is none.
fn split_zone(t: &str) -> (&str, Option<Option<i64>>) {
    if let Some(b) = t.strip_suffix(['Z', 'z']) {
        return (b, Some(Some(0)));
    }
    // A sign after the date part (position 10 and later) starts an offset.
    let Some(i) = t.rfind(['+', '-']).filter(|&i| i >= 10) else {
        return (t, None);
    };
    let (body, z) = t.split_at(i);
    let sign = if z.starts_with('-') { -1 } else { 1 };
    let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
    let off = num(&digits, 4).map(|v| sign * ((v / 100) * 3600 + (v % 100) * 60));
    (body.trim_end(), Some(off))
}

/// Parse a duration for `--stale`, `--keep-within`, ...: a number with a unit `s`, `m`
/// (minutes), `h`, `d`, `w` or `y` (365 days), or several (`1d12h`). A bare number is
/// seconds. (restic's `m` is months; here it is minutes: say `30d`.)
pub fn parse_duration(s: &str) -> Result<u64> {
    crate::time::parse_duration(s).ok_or_else(|| {
        Error::refused(format!(
            "duration {s:?}: use e.g. 26h, 90m, 2d, 1d12h, 1y (units s m h d w y)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_utc() {
        for t in [0, 1_764_450_000, 951_782_400 /* 2000-02-29 */, -86_400] {
            assert_eq!(
                parse_time(&format_time(t)).unwrap(),
                t,
                "{}",
                format_time(t)
            );
        }
        assert_eq!(format_time(1_764_450_000), "2025-11-29T21:00:00Z");
        assert_eq!(parse_time("2025-11-29 21:00Z").unwrap(), 1_764_450_000);
        assert_eq!(
            parse_time("2025-11-29T22:00:00+01:00").unwrap(),
            1_764_450_000
        );
        assert_eq!(parse_time("2025-11-29T16:00-0500").unwrap(), 1_764_450_000);
    }

    #[test]
    fn no_zone_is_utc_and_numbers_are_unix_seconds() {
        // Issue #12: `ls --at` and `restore --at` read the same string the same way.
        assert_eq!(
            parse_time("2025-06-01 12:00").unwrap(),
            parse_time("2025-06-01T12:00:00Z").unwrap()
        );
        assert_eq!(parse_time("2025-06-01").unwrap(), 1_748_736_000);
        assert_eq!(parse_time("1764300000").unwrap(), 1_764_300_000);
        assert_eq!(parse_time("2026-11-28T13:05:09Z").unwrap(), 1_795_871_109);
    }

    #[test]
    fn bad_times_are_refused() {
        for s in [
            "",
            "2025-13-01",
            "2025-1-01",
            "yesterday",
            "2025-06-01 25:00",
            "2025-06-01Z+1",
        ] {
            assert!(parse_time(s).is_err(), "{s}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("26h").unwrap(), 26 * 3600);
        assert_eq!(parse_duration("1d12h").unwrap(), 36 * 3600);
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86_400);
        for s in ["", "h", "5x", "12h5", "99999999999999999999d"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }
}
