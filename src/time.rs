//! Calendar arithmetic in UTC: civil dates (proleptic Gregorian) to and from day
//! numbers since 1970-01-01, Unix seconds split into day and second of day, and the
//! English month and weekday abbreviations every date text uses (IMAP internal dates,
//! RFC 5322 `Date:`, mbox `From ` lines, RFC 3339 in reports).
//!
//! Pure and total: no zone rules (a caller adds its own offset first), no panics. The
//! day-number algorithm is the well-known days-from-civil one (Howard Hinnant).
#![forbid(unsafe_code)]

/// Seconds in a day.
pub const SECS_PER_DAY: i64 = 86_400;

/// English month abbreviations, January first.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// English weekday abbreviations indexed by `day number mod 7` (1970-01-01 was a
/// Thursday); see [`weekday`].
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Days since 1970-01-01 of the civil date `y`-`m`-`d` (month 1–12, day 1–31;
/// out-of-range days roll over as in the algorithm, they are not checked).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month 1–12, day 1–31)` of a day number since 1970-01-01
/// (inverse of [`days_from_civil`]).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Unix seconds split into (day number since 1970-01-01, second of that day 0–86399).
pub fn split_unix(t: i64) -> (i64, i64) {
    (t.div_euclid(SECS_PER_DAY), t.rem_euclid(SECS_PER_DAY))
}

/// Unix seconds of `y`-`m`-`d` `hh`:`mi`:`ss` in UTC (no range checks).
pub fn unix_from_civil(y: i64, m: i64, d: i64, hh: i64, mi: i64, ss: i64) -> i64 {
    days_from_civil(y, m, d) * SECS_PER_DAY + hh * 3600 + mi * 60 + ss
}

/// A duration in seconds: a number with a unit `s`, `m` (minutes), `h`, `d`, `w` or
/// `y` (365 days), or several (`1d12h`); a bare number is seconds. `None` if it does
/// not parse or overflows.
pub fn parse_duration(s: &str) -> Option<u64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(v) = t.parse::<u64>() {
        return Some(v);
    }
    let mut total: u64 = 0;
    let mut n: Option<u64> = None;
    for c in t.chars() {
        if let Some(d) = c.to_digit(10) {
            n = Some(n.unwrap_or(0).checked_mul(10)?.checked_add(u64::from(d))?);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            'y' => 365 * 86_400,
            _ => return None,
        };
        total = total.checked_add(n.take()?.checked_mul(unit)?)?;
    }
    if n.is_some() {
        return None;
    }
    Some(total)
}

/// The abbreviation of month `m` (1–12; out-of-range months are clamped).
pub fn month_abbr(m: i64) -> &'static str {
    MONTHS[usize::try_from((m - 1).clamp(0, 11)).unwrap_or(0)]
}

/// The weekday abbreviation (`Mon`…`Sun`) of a day number since 1970-01-01.
pub fn weekday(days: i64) -> &'static str {
    WEEKDAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(1900, 3, 1), -25_508);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(unix_from_civil(2025, 11, 29, 21, 0, 0), 1_764_450_000);
    }

    #[test]
    fn days_round_trip() {
        let mut prev = civil_from_days(-800_000);
        for z in -800_000..800_000 {
            let (y, m, d) = civil_from_days(z);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d), "{z}");
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
            if z > -800_000 {
                // Consecutive days: next day of month, or day 1 of the next month.
                assert!(
                    (y, m, d) == (prev.0, prev.1, prev.2 + 1)
                        || (d == 1 && (y, m) == (prev.0, prev.1 + 1))
                        || ((y, m, d) == (prev.0 + 1, 1, 1) && prev.1 == 12),
                    "{prev:?} -> {:?}",
                    (y, m, d)
                );
            }
            prev = (y, m, d);
        }
    }

    #[test]
    fn split_and_names() {
        assert_eq!(split_unix(-1), (-1, 86_399));
        assert_eq!(split_unix(86_400), (1, 0));
        assert_eq!(weekday(0), "Thu");
        assert_eq!(weekday(-1), "Wed");
        assert_eq!(weekday(days_from_civil(2026, 11, 29)), "Sun");
        assert_eq!(month_abbr(1), "Jan");
        assert_eq!(month_abbr(12), "Dec");
        assert_eq!(month_abbr(13), "Dec");
    }
}
