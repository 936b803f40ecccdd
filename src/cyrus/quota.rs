//! Quota: the values of Cyrus's quota database and the `quota` file the service sends
//! for a user (doc/protocol.md, "2.7 Quota").
//!
//! Cyrus 3.6 keeps one record per quota root (`imap/quota_db.c`), in the backend
//! `quota_db` names (default `quotalegacy`: one file per root under
//! `{configdirectory}/quota/<h>/<root>`, written to `<root>.NEW` and renamed). The
//! value is a DList kvlist, `%(S (<used> <limit>) M (<used> <limit>) AS (<used>) NF
//! (<used>) MODSEQ <n>)`, the limit left out when unlimited; files written by Cyrus
//! before 2.5 hold `<used>\n<limit>` (storage only), which Cyrus reads as
//! `<used> <limit>`. Limits are in Cyrus's units: KiB for storage, counts for the
//! rest.
//!
//! The service's `quota` file: one line per quota root at or below the user's INBOX,
//! `<root> SP <value> LF`, the root percent-encoded like every name on the wire
//! (`%XX` for bytes outside `A-Z a-z 0-9 _ ~ . -`), the value exactly as stored
//! (a legacy value with its LF turned into a space, as Cyrus's reader does). Pure: no
//! I/O.
#![forbid(unsafe_code)]

use super::ParseError;
use super::dlist::{Dlist, parse_dlist};

/// Cyrus's quota resources, in its order (`enum quota_resource`).
pub const RESOURCES: usize = 4;
/// The names in the quota database (`quota_db_names`).
pub const DB_NAMES: [&str; RESOURCES] = ["S", "M", "AS", "NF"];
/// The names in IMAP (`SETQUOTA`, RFC 2087 and Cyrus's `X-` ones) and in the sync
/// protocol (`quota_names`).
pub const IMAP_NAMES: [&str; RESOURCES] = [
    "STORAGE",
    "MESSAGE",
    "X-ANNOTATION-STORAGE",
    "X-NUM-FOLDERS",
];

/// One quota root's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QuotaValue {
    /// Usage per resource (storage in bytes), as Cyrus last counted it.
    pub used: [i64; RESOURCES],
    /// Limit per resource in Cyrus's units (storage in KiB); `None`: unlimited.
    pub limits: [Option<i64>; RESOURCES],
    /// The record's modseq (0 when the record has none).
    pub modseq: u64,
}

impl QuotaValue {
    /// The limits as IMAP `SETQUOTA` resources: `STORAGE 100000 MESSAGE 500`.
    pub fn imap_limits(&self) -> Vec<(&'static str, i64)> {
        IMAP_NAMES
            .iter()
            .zip(self.limits)
            .filter_map(|(n, l)| l.map(|l| (*n, l)))
            .collect()
    }
}

fn num(d: &Dlist) -> Option<i64> {
    match d {
        Dlist::Atom(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// Parse one value of the quota database.
pub fn parse_quota_value(bytes: &[u8]) -> Result<QuotaValue, ParseError> {
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut q = QuotaValue::default();
    if text.first() == Some(&b'%') {
        let d = parse_dlist(text)?;
        if d.as_kvlist().is_none() {
            return Err(ParseError::invalid("quota value", 0, "not a kvlist"));
        }
        for (i, name) in DB_NAMES.iter().enumerate() {
            let Some(item) = d.get(name) else { continue };
            let items = item.as_list().ok_or_else(|| {
                ParseError::invalid("quota value", 0, format!("{name} is not a list"))
            })?;
            let bad = || ParseError::invalid("quota value", 0, format!("{name}: not a number"));
            if let Some(u) = items.first() {
                q.used[i] = num(u).ok_or_else(bad)?;
            }
            if let Some(l) = items.get(1) {
                let l = num(l).ok_or_else(bad)?;
                q.limits[i] = (l >= 0).then_some(l);
            }
        }
        if let Some(m) = d.get("MODSEQ") {
            q.modseq = m
                .as_u64()
                .ok_or_else(|| ParseError::invalid("quota value", 0, "MODSEQ: not a number"))?;
        }
        return Ok(q);
    }
    // Historical: "<used> <limit>" (storage), possibly followed by more pairs of
    // "<resource> <used> <limit>" which Cyrus 2.5 wrote; we keep storage only, as the
    // other resources of that era are not restorable limits anyway.
    let s = std::str::from_utf8(text)
        .map_err(|_| ParseError::invalid("quota value", 0, "legacy value is not text"))?;
    let mut f = s.split_ascii_whitespace();
    let (Some(u), Some(l)) = (f.next(), f.next()) else {
        return Err(ParseError::invalid(
            "quota value",
            0,
            "legacy value needs <used> <limit>",
        ));
    };
    let bad = |_| ParseError::invalid("quota value", 0, "legacy value: not a number");
    q.used[0] = u.parse().map_err(bad)?;
    let l: i64 = l.parse().map_err(bad)?;
    q.limits[0] = (l >= 0).then_some(l);
    Ok(q)
}

/// `%XX`-encode a quota root for the service's `quota` file (the wire's encoding).
pub fn encode_root(root: &str) -> String {
    let mut out = String::with_capacity(root.len());
    for b in root.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'~' | b'.' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_root(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One line of the `quota` file.
pub fn quota_line(root: &str, value: &[u8]) -> Vec<u8> {
    let mut v = value.strip_suffix(b"\n").unwrap_or(value).to_vec();
    // A legacy two-line value: Cyrus's reader turns the LF into a space.
    for b in &mut v {
        if *b == b'\n' {
            *b = b' ';
        }
    }
    let mut line = encode_root(root).into_bytes();
    line.push(b' ');
    line.extend_from_slice(&v);
    line.push(b'\n');
    line
}

/// Parse the `quota` file: (root, value) per line, in file order.
pub fn parse_quota_file(bytes: &[u8]) -> Result<Vec<(String, QuotaValue)>, ParseError> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    for line in bytes.split(|&b| b == b'\n') {
        let here = offset;
        offset += line.len() as u64 + 1;
        if line.is_empty() {
            continue;
        }
        let text = std::str::from_utf8(line)
            .map_err(|_| ParseError::invalid("quota file", here, "line is not UTF-8"))?;
        let (root, value) = text
            .split_once(' ')
            .ok_or_else(|| ParseError::invalid("quota file", here, "no space after the root"))?;
        let root = decode_root(root)
            .ok_or_else(|| ParseError::invalid("quota file", here, "bad %XX in the root"))?;
        let v = parse_quota_value(value.as_bytes())
            .map_err(|e| ParseError::invalid("quota file", here, format!("root {root}: {e}")))?;
        out.push((root, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlist_value_written_by_cyrus_3_6() {
        // Verbatim from a 3.6.1 quotalegacy file after `SETQUOTA user.bob (STORAGE
        // 100000 MESSAGE 500)`.
        let q = parse_quota_value(b"%(S (0 100000) M (0 500) AS (0) NF (2) MODSEQ 3)\n").unwrap();
        assert_eq!(q.limits, [Some(100000), Some(500), None, None]);
        assert_eq!(q.used, [0, 0, 0, 2]);
        assert_eq!(q.modseq, 3);
        assert_eq!(q.imap_limits(), vec![("STORAGE", 100000), ("MESSAGE", 500)]);
    }

    #[test]
    fn legacy_value() {
        let q = parse_quota_value(b"1234\n-1\n").unwrap();
        assert_eq!((q.used[0], q.limits[0]), (1234, None));
        let q = parse_quota_value(b"1234 2048").unwrap();
        assert_eq!(q.limits[0], Some(2048));
        assert!(parse_quota_value(b"12").is_err());
        assert!(parse_quota_value(b"%(S x)").is_err());
    }

    #[test]
    fn file_round_trip() {
        let mut f = quota_line("user.bob", b"%(S (7 100) MODSEQ 9)\n");
        f.extend(quota_line("user.bob.Sent Items", b"5\n50\n"));
        assert_eq!(
            String::from_utf8_lossy(&f),
            "user.bob %(S (7 100) MODSEQ 9)\nuser.bob.Sent%20Items 5 50\n"
        );
        let back = parse_quota_file(&f).unwrap();
        assert_eq!(back[0].0, "user.bob");
        assert_eq!(back[0].1.limits[0], Some(100));
        assert_eq!(back[1].0, "user.bob.Sent Items");
        assert_eq!(back[1].1.limits[0], Some(50));
        assert!(parse_quota_file(b"nospace\n").is_err());
    }
}
