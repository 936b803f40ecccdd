//! Mailbox names: the `mailboxes.db` form (dbname) and Cyrus's internal form.
//!
//! Follows `mbname_from_dbname` / `mbname_dbname` in `imap/mboxlist.c` and
//! `mbname_from_intname` / `mbname_intname` in `imap/mboxname.c` (3.6.1).
//! `config_defdomain` is not applied: a domain equal to `defaultdomain` is kept.
#![forbid(unsafe_code)]

use super::{DB_DOMAINSEP, DB_HIERSEP, DeletedInfo, show_bytes};
use crate::cyrus::ParseError;

/// A mailbox name split into its parts (Cyrus's `mbname_t`, reduced).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MbName {
    /// Virtual domain, if any.
    pub domain: Option<String>,
    /// Deletion time of a `DELETED.*` name.
    pub deleted: Option<u64>,
    /// The user's localpart for `user.*` names (may contain a literal `.`).
    pub localpart: Option<String>,
    /// The remaining components, each with literal `.` (not `^`).
    pub boxes: Vec<String>,
}

/// `strtoul(s, NULL, 16)` for the deletion stamp: optional `0x`, then the
/// leading hex digits; saturates like strtoul.
fn hex_prefix(s: &str) -> u64 {
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    s.chars().map_while(|c| c.to_digit(16)).fold(0u64, |n, d| {
        n.checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(d)))
            .unwrap_or(u64::MAX)
    })
}

impl MbName {
    /// Common tail of `mbname_from_dbname` / `mbname_from_intname`: peel off
    /// the deleted prefix + stamp, then `user` + localpart.
    fn from_parts(domain: Option<String>, mut boxes: Vec<String>, dp: &str) -> MbName {
        let mut n = MbName {
            domain,
            ..MbName::default()
        };
        if boxes.len() > 2 && boxes[0] == dp {
            boxes.remove(0);
            let stamp = boxes.pop().map(|s| hex_prefix(&s)).unwrap_or(0);
            // Cyrus keeps 0 as "not deleted" (and has dropped both parts anyway).
            n.deleted = (stamp != 0).then_some(stamp);
        }
        if boxes.len() > 1 && boxes[0] == "user" {
            boxes.remove(0);
            n.localpart = Some(boxes.remove(0));
        }
        n.boxes = boxes;
        n
    }

    /// Split a dbname (0x1D after the domain, 0x1F between components).
    /// Empty components are dropped, as `strarray_split` does.
    pub fn from_dbname(dbname: &[u8], dp: &str) -> Result<MbName, ParseError> {
        let s = std::str::from_utf8(dbname).map_err(|_| {
            ParseError::invalid(
                "mailbox dbname",
                0,
                format!("{} is not UTF-8", show_bytes(dbname)),
            )
        })?;
        let (domain, rest) = match s.split_once(char::from(DB_DOMAINSEP)) {
            Some((d, r)) => (Some(d.to_string()), r),
            None => (None, s),
        };
        let boxes = rest
            .split(char::from(DB_HIERSEP))
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Self::from_parts(domain, boxes, dp))
    }

    /// Split an internal name (`domain!` prefix, `.` between components, `^`
    /// for a literal `.`).
    pub fn from_internal(name: &str, dp: &str) -> MbName {
        let (domain, rest) = match name.split_once('!') {
            Some((d, r)) => (Some(d.to_string()), r),
            None => (None, name),
        };
        let boxes = rest
            .split('.')
            .filter(|c| !c.is_empty())
            .map(|c| c.replace('^', "."))
            .collect();
        Self::from_parts(domain, boxes, dp)
    }

    fn build(&self, dp: &str, domsep: &str, sep: &str, esc: fn(&str) -> String) -> String {
        let mut parts: Vec<String> = Vec::new();
        if self.deleted.is_some() {
            parts.push(dp.to_string());
        }
        if let Some(lp) = &self.localpart {
            parts.push("user".to_string());
            parts.push(esc(lp));
        }
        parts.extend(self.boxes.iter().map(|b| esc(b)));
        if let Some(t) = self.deleted {
            // Cyrus prints `(unsigned) time` with %X.
            parts.push(format!("{:X}", t as u32));
        }
        let mut s = String::new();
        if let Some(d) = &self.domain {
            s.push_str(d);
            s.push_str(domsep);
        }
        s.push_str(&parts.join(sep));
        s
    }

    /// The internal name (`mbname_intname`).
    pub fn to_internal(&self, dp: &str) -> String {
        self.build(dp, "!", ".", |c| c.replace('.', "^"))
    }

    /// The dbname (`mbname_dbname`).
    pub fn to_dbname(&self, dp: &str) -> Vec<u8> {
        let gs = char::from(DB_DOMAINSEP).to_string();
        let us = char::from(DB_HIERSEP).to_string();
        self.build(dp, &gs, &us, str::to_string).into_bytes()
    }

    /// `localpart[@domain]` for a user's mailbox.
    pub fn userid(&self) -> Option<String> {
        let lp = self.localpart.as_ref()?;
        Some(match &self.domain {
            Some(d) => format!("{lp}@{d}"),
            None => lp.clone(),
        })
    }

    /// For a `DELETED.*` name: the original name and the deletion stamp.
    pub(crate) fn deleted_info(&self, dp: &str) -> Option<DeletedInfo> {
        let t = self.deleted?;
        let original = MbName {
            deleted: None,
            ..self.clone()
        };
        Some(DeletedInfo {
            original_name: original.to_internal(dp),
            hex_timestamp: format!("{:X}", t as u32),
            timestamp: t,
        })
    }
}

/// dbname to internal name, e.g. `example.com` 0x1D `user` 0x1F `bob` 0x1F `a.b`
/// becomes `example.com!user.bob.a^b`.
pub fn dbname_to_internal(dbname: &[u8], deletedprefix: &str) -> Result<String, ParseError> {
    Ok(MbName::from_dbname(dbname, deletedprefix)?.to_internal(deletedprefix))
}

/// Internal name to dbname (the inverse of [`dbname_to_internal`]).
pub fn internal_to_dbname(name: &str, deletedprefix: &str) -> Vec<u8> {
    MbName::from_internal(name, deletedprefix).to_dbname(deletedprefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_conversions() {
        let dp = "DELETED";
        let cases: [(&[u8], &str); 6] = [
            (b"user\x1fbob", "user.bob"),
            (b"user\x1fjohn.doe\x1fa.b", "user.john^doe.a^b"),
            (
                b"example.com\x1duser\x1fdave\x1fTrash",
                "example.com!user.dave.Trash",
            ),
            (
                b"DELETED\x1fuser\x1fbob\x1fOld\x1f6560F1A2",
                "DELETED.user.bob.Old.6560F1A2",
            ),
            (b"shared\x1fTeam Folder", "shared.Team Folder"),
            (
                b"example.com\x1dDELETED\x1fuser\x1fd\x1fJ\x1f65000000",
                "example.com!DELETED.user.d.J.65000000",
            ),
        ];
        for (db, int) in cases {
            assert_eq!(dbname_to_internal(db, dp).unwrap(), int);
            assert_eq!(internal_to_dbname(int, dp), db);
        }
        let n = MbName::from_dbname(b"example.com\x1dDELETED\x1fuser\x1fd\x1fJ\x1f65000000", dp)
            .unwrap();
        assert_eq!(n.userid().as_deref(), Some("d@example.com"));
        let info = n.deleted_info(dp).unwrap();
        assert_eq!(
            (info.original_name.as_str(), info.timestamp),
            ("example.com!user.d.J", 0x6500_0000)
        );
        // Lowercase stamps are normalised as Cyrus does (strtoul then %X).
        assert_eq!(
            dbname_to_internal(b"DELETED\x1fa\x1fabc", dp).unwrap(),
            "DELETED.a.ABC"
        );
    }
}
