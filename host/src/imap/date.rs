//! IMAP internal dates (`date-time` of RFC 3501: `"dd-Mon-yyyy hh:mm:ss +zzzz"`),
//! to and from Unix seconds. Pure; the civil-date arithmetic is in [`crate::time`].
#![forbid(unsafe_code)]

use crate::time::{MONTHS, civil_from_days, month_abbr, split_unix, unix_from_civil};

/// Format Unix seconds as an IMAP date-time in the zone `tz_minutes` east of UTC
/// (without the surrounding quotes), e.g. `01-Jan-2020 10:00:00 +0100`.
pub fn format_internaldate(unix: i64, tz_minutes: i32) -> String {
    let local = unix + i64::from(tz_minutes) * 60;
    let (days, secs) = split_unix(local);
    let (y, m, d) = civil_from_days(days);
    let month = month_abbr(m);
    let sign = if tz_minutes < 0 { '-' } else { '+' };
    let tz = tz_minutes.unsigned_abs();
    format!(
        "{d:02}-{month}-{y:04} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        tz / 60,
        tz % 60
    )
}

/// Parse an IMAP date-time (a leading space for one-digit days is allowed, as servers
/// send `" 1-Jan-2020 ..."`). Returns (Unix seconds, zone minutes east of UTC).
pub fn parse_internaldate(s: &[u8]) -> Option<(i64, i32)> {
    let s = std::str::from_utf8(s).ok()?.trim();
    let (date, rest) = s.split_once(' ')?;
    let (time, zone) = rest.trim().split_once(' ')?;
    let mut dp = date.split('-');
    let day: i64 = dp.next()?.parse().ok()?;
    let mon = dp.next()?;
    let year: i64 = dp.next()?.parse().ok()?;
    if dp.next().is_some() || !(1..=31).contains(&day) || !(0..=9999).contains(&year) {
        return None;
    }
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as i64 + 1;
    let mut tp = time.split(':');
    let h: i64 = tp.next()?.parse().ok()?;
    let mi: i64 = tp.next()?.parse().ok()?;
    let se: i64 = tp.next()?.parse().ok()?;
    if tp.next().is_some() || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let zb = zone.as_bytes();
    if zb.len() != 5 || !(zb[0] == b'+' || zb[0] == b'-') || !zb[1..].iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let zh: i32 = zone[1..3].parse().ok()?;
    let zm: i32 = zone[3..5].parse().ok()?;
    let tz = (zh * 60 + zm) * if zb[0] == b'-' { -1 } else { 1 };
    let local = unix_from_civil(year, month, day, h, mi, se);
    Some((local - i64::from(tz) * 60, tz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(format_internaldate(0, 0), "01-Jan-1970 00:00:00 +0000");
        assert_eq!(
            format_internaldate(1577869200, 60),
            "01-Jan-2020 10:00:00 +0100"
        );
        assert_eq!(
            format_internaldate(951782400, -330),
            "28-Feb-2000 18:30:00 -0530"
        );
        // Cyrus's answer for an APPEND of "01-Jan-2020 10:00:00 +0100".
        assert_eq!(
            parse_internaldate(b" 1-Jan-2020 09:00:00 +0000"),
            Some((1577869200, 0))
        );
        assert_eq!(
            parse_internaldate(b"01-Jan-2020 10:00:00 +0100"),
            Some((1577869200, 60))
        );
    }

    #[test]
    fn roundtrip_many() {
        let mut t: i64 = -86400 * 365 * 30;
        while t < 86400 * 365 * 80 {
            for tz in [0, 60, -300, 345, -720, 840] {
                let s = format_internaldate(t, tz);
                assert_eq!(parse_internaldate(s.as_bytes()), Some((t, tz)), "{s}");
            }
            t += 86400 * 17 + 3671;
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b""[..],
            b"01-Foo-2020 10:00:00 +0100",
            b"32-Jan-2020 10:00:00 +0100",
            b"01-Jan-2020 25:00:00 +0100",
            b"01-Jan-2020 10:00:00 0100",
            b"01-Jan-2020 10:00 +0100",
            b"\xff",
        ] {
            assert_eq!(parse_internaldate(bad), None);
        }
    }
}
