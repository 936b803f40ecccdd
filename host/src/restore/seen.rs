//! The backed-up seen database (`user/<run>/seen`, twoskip): per folder UniqueID, which
//! UIDs the user had seen. Cyrus 3.6 keeps the owner's seen state of their own folders
//! in the index records' `\Seen` flag (which every restore carries); the database holds
//! what older servers or non-owned folders kept there. `--seen` merges it into the
//! `\Seen` flags of the restored records.
//!
//! Value format (Cyrus `imap/seen_db.c`): `<version> <lastread> <lastuid> <lastchange>
//! <seenuids>`, `seenuids` an IMAP sequence set of UIDs (`1:5,7`).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use crate::cyrus::twoskip;
use crate::error::{Error, Result};

/// A set of UIDs as `(first, last)` ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UidSet(pub Vec<(u32, u32)>);

impl UidSet {
    /// Whether `uid` is in the set.
    pub fn contains(&self, uid: u32) -> bool {
        self.0.iter().any(|&(a, b)| a <= uid && uid <= b)
    }

    /// The set as IMAP writes it (`1:5,7`); empty for no UID.
    pub fn to_imap(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}:{b}")
                }
            })
            .collect();
        parts.join(",")
    }
}

/// Parse an IMAP sequence set of UIDs (`1:5,7,9:8`); `*` is refused (seen sets never
/// hold it). `None` if malformed.
pub fn parse_uid_set(s: &str) -> Option<UidSet> {
    let mut out = Vec::new();
    if s.is_empty() {
        return Some(UidSet(out));
    }
    for part in s.split(',') {
        let (a, b) = match part.split_once(':') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        out.push((a.min(b), a.max(b)));
    }
    Some(UidSet(out))
}

/// Folder UniqueID → seen UIDs, from the bytes of a seen database.
pub fn parse_seen_db(bytes: &[u8]) -> Result<BTreeMap<String, UidSet>> {
    let recs = twoskip::read_all(bytes).map_err(|e| Error::parse("seen database", e))?;
    let mut out = BTreeMap::new();
    for (k, v) in recs {
        let (Ok(k), Ok(v)) = (String::from_utf8(k), String::from_utf8(v)) else {
            continue;
        };
        let fields: Vec<&str> = v.split(' ').collect();
        let set = fields.get(4).copied().unwrap_or("");
        let uids = parse_uid_set(set.trim_end()).ok_or_else(|| {
            Error::other(format!(
                "seen database: folder {k}: seen uids {set:?} are not a sequence set"
            ))
        })?;
        out.insert(k, uids);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_sets() {
        let s = parse_uid_set("1:3,7,10:9").unwrap();
        for u in [1, 2, 3, 7, 9, 10] {
            assert!(s.contains(u), "{u}");
        }
        for u in [0, 4, 8, 11] {
            assert!(!s.contains(u), "{u}");
        }
        assert_eq!(parse_uid_set("").unwrap(), UidSet::default());
        assert!(parse_uid_set("1:*").is_none());
        assert!(parse_uid_set("a").is_none());
    }
}
