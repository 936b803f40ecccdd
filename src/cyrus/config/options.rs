//! The Cyrus options cyrvault knows by type, and the value syntaxes of
//! `lib/libconfig.c`: switches, integers (`strtol` base 0), durations, enums.

use super::{ConfigError, Entry};

/// How Cyrus types an option (`lib/imapoptions`); only the options we know are listed.
#[derive(Clone, Copy)]
pub(super) enum OptType {
    Str,
    Switch,
    Int,
    Duration,
    Enum(&'static [&'static str]),
    StringList(&'static [&'static str]),
    Bitfield(&'static [&'static str]),
}

const DB_BACKENDS: &[&str] = &["flat", "skiplist", "twoskip", "zeroskip"];
const MBOXLIST_BACKENDS: &[&str] = &["flat", "skiplist", "sql", "twoskip", "zeroskip"];
pub(super) const META_FILE_NAMES: &[&str] = &[
    "header",
    "index",
    "cache",
    "expunge",
    "squat",
    "annotations",
    "lock",
    "dav",
    "archivecache",
];

/// The Cyrus options we read or validate, with their Cyrus types (from
/// `lib/imapoptions` at cyrus-imapd-3.6.1). Cyrus checks every known option; we
/// check these and keep every other key verbatim, as Cyrus does with its overflow
/// table.
const KNOWN: &[(&str, OptType)] = &[
    ("configdirectory", OptType::Str),
    ("defaultpartition", OptType::Str),
    ("defaultdomain", OptType::Str),
    ("metapartition_files", OptType::Bitfield(META_FILE_NAMES)),
    ("archive_enabled", OptType::Switch),
    ("mboxname_lockpath", OptType::Str),
    ("servername", OptType::Str),
    ("unixhierarchysep", OptType::Switch),
    ("altnamespace", OptType::Switch),
    ("virtdomains", OptType::Enum(&["off", "userid", "on"])),
    ("hashimapspool", OptType::Switch),
    ("fulldirhash", OptType::Switch),
    ("mailbox_legacy_dirs", OptType::Switch),
    ("deletedprefix", OptType::Str),
    ("delete_mode", OptType::Enum(&["immediate", "delayed"])),
    (
        "expunge_mode",
        OptType::Enum(&["immediate", "semidelayed", "delayed"]),
    ),
    ("sievedir", OptType::Str),
    ("sieveusehomedir", OptType::Switch),
    ("mboxlist_db", OptType::StringList(MBOXLIST_BACKENDS)),
    ("mboxlist_db_path", OptType::Str),
    (
        "annotation_db",
        OptType::StringList(&["skiplist", "twoskip", "zeroskip"]),
    ),
    ("annotation_db_path", OptType::Str),
    ("subscription_db", OptType::StringList(DB_BACKENDS)),
    ("seenstate_db", OptType::StringList(DB_BACKENDS)),
    ("cyrus_user", OptType::Str),
    ("syslog_prefix", OptType::Str),
    ("umask", OptType::Str),
    ("temp_path", OptType::Str),
    ("proc_path", OptType::Str),
    ("lmtpsocket", OptType::Str),
    ("idlesocket", OptType::Str),
    ("notifysocket", OptType::Str),
    ("duplicate_db_path", OptType::Str),
    ("statuscache_db_path", OptType::Str),
    ("quota_db_path", OptType::Str),
    ("ptscache_db_path", OptType::Str),
    ("tls_sessions_db_path", OptType::Str),
    ("userdeny_db_path", OptType::Str),
    ("backup_db_path", OptType::Str),
    ("sync_cache_db_path", OptType::Str),
    ("zoneinfo_db_path", OptType::Str),
    ("newsrc_db_path", OptType::Str),
    ("conversations", OptType::Switch),
    ("maxword", OptType::Int),
    ("maxquoted", OptType::Int),
    ("mailbox_maxmessages_addressbook", OptType::Int),
    ("timeout", OptType::Duration),
];

pub(super) fn known_type(name: &str) -> Option<OptType> {
    KNOWN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

pub(super) fn bad(e: &Entry, key: &str, what: &str) -> ConfigError {
    ConfigError::new(
        &e.file,
        key,
        format!("invalid value '{}' on line {} ({what})", e.value, e.line),
    )
}

pub(super) fn validate(t: OptType, key: &str, e: &Entry) -> Result<(), ConfigError> {
    let v = e.value.as_str();
    match t {
        OptType::Str => Ok(()),
        OptType::Switch => parse_switch(v)
            .map(|_| ())
            .ok_or_else(|| bad(e, key, "expected yes/no, on/off, true/false or 1/0")),
        OptType::Int => parse_int(v)
            .map(|_| ())
            .ok_or_else(|| bad(e, key, "expected an integer")),
        OptType::Duration => parse_duration(v, 's')
            .map(|_| ())
            .ok_or_else(|| bad(e, key, "expected a duration such as 30m or 7d")),
        OptType::Enum(names) => {
            let n = normalize_enum(v);
            if names.contains(&n) {
                Ok(())
            } else {
                Err(bad(
                    e,
                    key,
                    &format!("expected one of {}", names.join(", ")),
                ))
            }
        }
        OptType::StringList(names) => {
            if names.contains(&v) {
                Ok(())
            } else {
                Err(bad(
                    e,
                    key,
                    &format!("expected one of {}", names.join(", ")),
                ))
            }
        }
        OptType::Bitfield(names) => {
            for word in v.split_ascii_whitespace() {
                if !names.contains(&word) {
                    return Err(ConfigError::new(
                        &e.file,
                        key,
                        format!(
                            "invalid value '{word}' in '{v}' on line {} (known: {})",
                            e.line,
                            names.join(" ")
                        ),
                    ));
                }
            }
            Ok(())
        }
    }
}

/// Cyrus's `config_parse_switch`: decided by the first character(s).
pub(super) fn parse_switch(v: &str) -> Option<bool> {
    let b = v.as_bytes();
    match b.first()? {
        b'0' | b'n' | b'f' => Some(false),
        b'1' | b'y' | b't' => Some(true),
        b'o' if b.get(1) == Some(&b'f') => Some(false),
        b'o' if b.get(1) == Some(&b'n') => Some(true),
        _ => None,
    }
}

/// ENUM values accept on/off synonyms (`config_read_file`).
pub(super) fn normalize_enum(v: &str) -> &str {
    match v {
        "1" | "yes" | "t" | "true" => "on",
        "0" | "no" | "f" | "false" => "off",
        other => other,
    }
}

/// `strtol(v, &end, 0)` with `*end == 0` required: optional sign, `0x` hex,
/// leading-0 octal, decimal.
pub(super) fn parse_int(v: &str) -> Option<i64> {
    let s = v.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (neg, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (16, h)
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..])
    } else {
        (10, s)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let n = i64::from_str_radix(digits, radix).ok()?;
    Some(if neg { -n } else { n })
}

/// Cyrus's `config_parseduration`: `[-]` then groups of digits with a unit `d h m s`;
/// a trailing bare number takes `defunit`. Returns seconds.
pub(super) fn parse_duration(v: &str, defunit: char) -> Option<i64> {
    let mut s = v.to_string();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        s.push(defunit);
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r.to_string()),
        None => (false, s),
    };
    let mut total: i64 = 0;
    let mut acc: i64 = 0;
    let mut saw_digit = false;
    for c in body.chars() {
        if let Some(d) = c.to_digit(10) {
            acc = acc.checked_mul(10)?.checked_add(i64::from(d))?;
            saw_digit = true;
            continue;
        }
        if !saw_digit {
            return None;
        }
        saw_digit = false;
        let mult = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(acc.checked_mul(mult)?)?;
        acc = 0;
    }
    Some(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches() {
        for v in ["yes", "on", "true", "1", "t", "y"] {
            assert_eq!(parse_switch(v), Some(true), "{v}");
        }
        for v in ["no", "off", "false", "0", "f", "n"] {
            assert_eq!(parse_switch(v), Some(false), "{v}");
        }
        for v in ["o", "maybe", "2", ""] {
            assert_eq!(parse_switch(v), None, "{v}");
        }
    }

    #[test]
    fn enums_accept_on_off_synonyms() {
        assert_eq!(normalize_enum("yes"), "on");
        assert_eq!(normalize_enum("false"), "off");
        assert_eq!(normalize_enum("userid"), "userid");
    }

    #[test]
    fn ints_like_strtol_base_0() {
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("010"), Some(8));
        assert_eq!(parse_int("-7"), Some(-7));
        assert_eq!(parse_int("+7"), Some(7));
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("1 "), None);
        assert_eq!(parse_int("09"), None);
        assert_eq!(parse_int("0x"), None);
        assert_eq!(parse_int("99999999999999999999"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("1d2h3m4s", 's'),
            Some(86400 + 7200 + 180 + 4)
        );
        assert_eq!(parse_duration("30", 'm'), Some(1800));
        assert_eq!(parse_duration("1h30", 'm'), Some(5400));
        assert_eq!(parse_duration("-2h", 's'), Some(-7200));
        assert_eq!(parse_duration("h", 's'), None);
        assert_eq!(parse_duration("1w", 's'), None);
        assert_eq!(parse_duration("99999999999999999999d", 's'), None);
    }
}
