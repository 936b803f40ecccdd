//! The replication commands of an exact restore, built from a folder's archived meta
//! the way `sync_client` builds them from a live mailbox (`sync_prepare_dlists`,
//! `sync_print_flags`, `encode_annotations` in `imap/sync_support.c`, Cyrus 3.6.1).
//! Pure: archived bytes in, [`Value`]s out.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use crate::cyrus::annotations::{AnnotationDb, OWNER_TOKEN, parse_annotations};
use crate::cyrus::header::MailboxHeader;
use crate::cyrus::index::{
    FLAG_ANSWERED, FLAG_DELETED, FLAG_DRAFT, FLAG_FLAGGED, FLAG_INTERNAL_EXPUNGED,
    FLAG_INTERNAL_UNLINKED, FLAG_SEEN, Index, IndexRecord,
};
use crate::cyrus::quota::{IMAP_NAMES, QuotaValue};
use crate::cyrus::twoskip;
use crate::error::{Error, Result};
use crate::replication::{Kv, Value};
use crate::restore::meta::MailboxAnnotation;

/// Cyrus's `OPT_*` mailbox options that replication carries (`sync_encode_options`).
const OPTIONS: [(u32, char); 4] = [(1 << 0, 'P'), (1 << 2, 'S'), (1 << 3, 'D'), (1 << 4, 'A')];

/// The ACL as Cyrus stores and replicates it: `id TAB rights TAB` per entry.
pub fn acl_string(acl: &[(String, String)]) -> String {
    let mut s = String::new();
    for (id, rights) in acl {
        s.push_str(id);
        s.push('\t');
        s.push_str(rights);
        s.push('\t');
    }
    s
}

/// `sync_encode_options`: the syncable option bits as letters.
pub fn options_string(options: u32) -> String {
    OPTIONS
        .iter()
        .filter(|(bit, _)| options & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// One message annotation as replicated: entry, user (empty: shared), modseq, value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAnnotation {
    /// Entry name (`/comment`, `/vendor/...`).
    pub entry: String,
    /// Empty for a shared annotation, else whose private one.
    pub userid: String,
    /// Its modseq.
    pub modseq: u64,
    /// Its value.
    pub value: Vec<u8>,
}

/// A folder's message annotations by UID.
pub type MessageAnnotations = BTreeMap<u32, Vec<MessageAnnotation>>;

/// Per-message annotations of a folder from its `cyrus.annotations`, by UID, in key
/// order, tombstones left out, the owner token turned into `owner`.
pub fn message_annotations(bytes: Option<&[u8]>, owner: &str) -> Result<MessageAnnotations> {
    let mut out = MessageAnnotations::new();
    let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
        return Ok(out);
    };
    let recs = twoskip::read_all(bytes).map_err(|e| Error::parse("cyrus.annotations", e))?;
    for a in parse_annotations(&recs, AnnotationDb::Mailbox)
        .map_err(|e| Error::parse("cyrus.annotations", e))?
    {
        if a.is_tombstone() {
            continue;
        }
        let Some(user) = a.userid else { continue };
        let user = if user == OWNER_TOKEN.as_bytes() {
            owner.to_string()
        } else {
            String::from_utf8_lossy(&user).into_owned()
        };
        out.entry(a.uid).or_default().push(MessageAnnotation {
            entry: String::from_utf8_lossy(&a.entry).into_owned(),
            userid: user,
            modseq: a.modseq,
            value: a.value,
        });
    }
    Ok(out)
}

/// The FLAGS of a record in `sync_print_flags` order: `\Deleted \Answered \Flagged
/// \Draft \Expunged \Seen`, then keywords in the folder's flag-slot order.
fn flags(r: &IndexRecord, names: &[Option<String>]) -> Value {
    let mut v = Vec::new();
    for (bit, name) in [
        (FLAG_DELETED, "\\Deleted"),
        (FLAG_ANSWERED, "\\Answered"),
        (FLAG_FLAGGED, "\\Flagged"),
        (FLAG_DRAFT, "\\Draft"),
        (FLAG_INTERNAL_EXPUNGED, "\\Expunged"),
        (FLAG_SEEN, "\\Seen"),
    ] {
        if r.system_flags & bit != 0 {
            v.push(Value::Flag(name));
        }
    }
    for bit in r.user_flag_bits() {
        if let Some(Some(n)) = names.get(bit) {
            v.push(Value::str(n));
        }
    }
    Value::List(v)
}

/// One RECORD of `APPLY MAILBOX`.
fn record(
    r: &IndexRecord,
    minor: u32,
    names: &[Option<String>],
    annots: Option<&Vec<MessageAnnotation>>,
) -> Value {
    let mut kv = Kv::new()
        .num("UID", u64::from(r.uid))
        .num("MODSEQ", r.modseq)
        .num("LAST_UPDATED", r.last_updated.secs())
        .val("FLAGS", flags(r, names))
        .num("INTERNALDATE", r.internaldate.secs())
        .num("SIZE", r.size)
        .str("GUID", r.guid.to_hex());
    let mut list = Vec::new();
    for a in annots.into_iter().flatten() {
        list.push(
            Kv::new()
                .str("ENTRY", &a.entry)
                .str("USERID", &a.userid)
                .num("MODSEQ", a.modseq)
                .str("VALUE", &a.value)
                .done(),
        );
    }
    // The record fields Cyrus sends as virtual annotations (`encode_annotations`).
    let virt = |entry: &str, v: Value| {
        Kv::new()
            .str("ENTRY", entry)
            .str("USERID", "")
            .num("MODSEQ", 0)
            .val("VALUE", v)
            .done()
    };
    if r.cid != 0 && minor >= 13 {
        list.push(virt("/vendor/cmu/cyrus-imapd/thrid", Value::Hex(r.cid)));
    }
    if r.savedate.secs() != 0 && minor >= 15 {
        list.push(virt(
            "/vendor/cmu/cyrus-imapd/savedate",
            Value::Num(r.savedate.secs()),
        ));
    }
    if r.createdmodseq != 0 && minor >= 16 {
        list.push(virt(
            "/vendor/cmu/cyrus-imapd/createdmodseq",
            Value::Num(r.createdmodseq),
        ));
    }
    if !list.is_empty() {
        kv = kv.val("ANNOTATIONS", Value::List(list));
    }
    kv.done()
}

/// What goes into one `APPLY MAILBOX`.
pub struct MailboxSpec<'a> {
    /// Internal name (`user.bob.Sent`).
    pub name: &'a str,
    /// The UniqueID (kept: that is the point of an exact restore).
    pub uniqueid: &'a str,
    /// Target partition.
    pub partition: &'a str,
    /// The archived `cyrus.header`.
    pub header: &'a MailboxHeader,
    /// The archived `cyrus.index`.
    pub index: &'a Index,
    /// Per-message annotations by UID ([`message_annotations`]).
    pub annotations: &'a MessageAnnotations,
    /// Mailbox annotations (special-use, comments, ...).
    pub mailbox_annotations: &'a [MailboxAnnotation],
    /// UIDs to leave out (messages the archive cannot give).
    pub skip: &'a std::collections::HashSet<u32>,
}

/// `APPLY MAILBOX` for a folder as archived: every record (expunged ones too, which
/// is what QRESYNC clients are told about), the folder's counters, ACL, options and
/// annotations. With `probe`, the same folder with no record and no counters (LAST_UID
/// 0, HIGHESTMODSEQ 1): it creates the mailbox, which checks the partition before any
/// message is uploaded (sync_server asserts on an unknown partition in an upload).
pub fn apply_mailbox(m: &MailboxSpec<'_>, probe: bool) -> Value {
    if probe {
        apply_mailbox_part(m, 0..0, false)
    } else {
        apply_mailbox_part(m, 0..m.index.records.len(), true)
    }
}

/// `APPLY MAILBOX` for one part of a folder: the records `range` (of the index, in
/// ascending UID) on top of the parts before it, which the target already has.
/// sync_server appends records above its LAST_UID and leaves the ones it has alone
/// (`sync_mailbox_compare_update`), so a big folder goes in as several parts, each
/// uploaded over its own session, applied one after the other. A part that is not
/// the `last` carries counters that only grow from part to part and stay at or below
/// the final ones (LAST_UID and HIGHESTMODSEQ as of its records, no recent or append
/// date, no SYNC_CRC, no mailbox annotations): sync_server refuses a LAST_UID or
/// HIGHESTMODSEQ lower than it has (`sync_apply_mailbox`). The last part carries the
/// folder's own counters, CRCs and annotations. `0..0` not last is the probe.
pub fn apply_mailbox_part(m: &MailboxSpec<'_>, range: std::ops::Range<usize>, last: bool) -> Value {
    let h = &m.index.header;
    let names = &m.header.user_flags;
    let mut kv = Kv::new()
        .str("UNIQUEID", m.uniqueid)
        .str("MBOXNAME", m.name);
    if let Some(t) = m.header.mbtype.as_deref().filter(|t| !t.is_empty()) {
        kv = kv.str("MBOXTYPE", t);
    }
    if last && m.skip.is_empty() {
        kv = kv
            .num("SYNC_CRC", u64::from(h.sync_crc_basic))
            .num("SYNC_CRC_ANNOT", u64::from(h.sync_crc_annot));
    }
    let upto = m.index.records.get(..range.end).unwrap_or(&[]);
    let (last_uid, modseq, recentuid, recenttime) = if last {
        (
            u64::from(h.last_uid),
            h.highestmodseq.max(1),
            u64::from(h.recentuid),
            h.recenttime.secs(),
        )
    } else {
        (
            upto.iter().map(|r| u64::from(r.uid)).max().unwrap_or(0),
            upto.iter()
                .map(|r| r.modseq)
                .max()
                .unwrap_or(0)
                .clamp(1, h.highestmodseq.max(1)),
            0,
            0,
        )
    };
    kv = kv
        .num("LAST_UID", last_uid)
        .num("HIGHESTMODSEQ", modseq)
        .num("RECENTUID", recentuid)
        .num("RECENTTIME", recenttime)
        .num(
            "LAST_APPENDDATE",
            if last { h.last_appenddate.secs() } else { 0 },
        )
        .num("POP3_LAST_LOGIN", h.pop3_last_login.secs())
        .num("POP3_SHOW_AFTER", h.pop3_show_after.secs())
        .num("UIDVALIDITY", u64::from(h.uidvalidity))
        .str("PARTITION", m.partition)
        .str("ACL", acl_string(&m.header.acl))
        .str("OPTIONS", options_string(h.options));
    if let Some(q) = &m.header.quotaroot {
        kv = kv.str("QUOTAROOT", q);
    }
    if h.createdmodseq != 0 {
        kv = kv.num("CREATEDMODSEQ", h.createdmodseq);
    }
    if last && !m.mailbox_annotations.is_empty() {
        let list = m
            .mailbox_annotations
            .iter()
            .map(|a| {
                Kv::new()
                    .str("ENTRY", &a.entry)
                    .str("USERID", &a.userid)
                    .num("MODSEQ", 0)
                    .str("VALUE", &a.value)
                    .done()
            })
            .collect();
        kv = kv.val("ANNOTATIONS", Value::List(list));
    }
    let mut recs = Vec::new();
    for r in m.index.records.get(range).unwrap_or(&[]) {
        if m.skip.contains(&r.uid) {
            continue;
        }
        recs.push(record(r, h.minor_version, names, m.annotations.get(&r.uid)));
    }
    kv.val("RECORD", Value::List(recs)).done()
}

/// Whether the record needs its message file on the target (not already unlinked).
pub fn needs_file(r: &IndexRecord) -> bool {
    r.system_flags & FLAG_INTERNAL_UNLINKED == 0
}

/// Whether the record is expunged (then a missing file is acceptable: the target
/// records it as unlinked, as a replica does).
pub fn is_expunged(r: &IndexRecord) -> bool {
    r.system_flags & FLAG_INTERNAL_EXPUNGED != 0
}

/// `APPLY QUOTA` for a root: its limits (storage in KiB), and its modseq so that the
/// target records it silently.
pub fn apply_quota(root: &str, q: &QuotaValue) -> Value {
    let mut kv = Kv::new().str("ROOT", root);
    for (name, limit) in IMAP_NAMES.iter().zip(q.limits) {
        if let Some(l) = limit.and_then(|l| u64::try_from(l).ok()) {
            kv = kv.num(name, l);
        }
    }
    if q.modseq != 0 {
        kv = kv.num("MODSEQ", q.modseq);
    }
    kv.done()
}

/// `APPLY SEEN` for one entry of the seen database: `<version> <lastread> <lastuid>
/// <lastchange> <seenuids>` (`imap/seen_db.c`). `None` if the value does not parse.
pub fn apply_seen(user: &str, uniqueid: &str, value: &str) -> Option<Value> {
    let f: Vec<&str> = value.splitn(5, ' ').collect();
    let [_, lastread, lastuid, lastchange, uids] = f[..] else {
        return None;
    };
    Some(
        Kv::new()
            .str("USERID", user)
            .str("UNIQUEID", uniqueid)
            .num("LASTREAD", lastread.parse().ok()?)
            .num("LASTUID", lastuid.parse().ok()?)
            .num("LASTCHANGE", lastchange.parse().ok()?)
            .str("SEENUIDS", uids.trim_end())
            .done(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cyrus::Guid;
    use crate::cyrus::index::{CyrusTime, IndexHeader};
    use crate::replication::wire::write_value;

    fn text(v: &Value) -> String {
        let mut out = Vec::new();
        write_value(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn mailbox_like_sync_client() {
        let header = MailboxHeader {
            mbtype: None,
            name: Some("user.bob".into()),
            uniqueid: Some("u1".into()),
            quotaroot: Some("user.bob".into()),
            acl: vec![("bob".into(), "lrswipkxtecdan".into())],
            user_flags: vec![Some("$Forwarded".into())],
            format: crate::cyrus::header::HeaderFormat::Dlist36,
            jmapid: None,
        };
        let mut r = IndexRecord {
            uid: 2,
            modseq: 9,
            system_flags: FLAG_DELETED | FLAG_SEEN | FLAG_INTERNAL_EXPUNGED,
            guid: Guid::of(b"x"),
            size: 23,
            ..Default::default()
        };
        r.user_flags[0] = 1;
        r.savedate = CyrusTime::from_secs(7);
        r.createdmodseq = 4;
        let index = Index {
            header: IndexHeader {
                minor_version: 17,
                last_uid: 5,
                highestmodseq: 10,
                uidvalidity: 99,
                options: 1 | 4,
                createdmodseq: 1,
                sync_crc_basic: 11,
                sync_crc_annot: 12,
                ..Default::default()
            },
            records: vec![r],
        };
        let none = Default::default();
        let skip = Default::default();
        let annots = [MailboxAnnotation {
            entry: "/comment".into(),
            userid: String::new(),
            value: "hi".into(),
        }];
        let spec = MailboxSpec {
            name: "user.bob",
            uniqueid: "u1",
            partition: "p1",
            header: &header,
            index: &index,
            annotations: &none,
            mailbox_annotations: &annots,
            skip: &skip,
        };
        assert_eq!(
            text(&apply_mailbox(&spec, false)),
            format!(
                "%(UNIQUEID u1 MBOXNAME user.bob SYNC_CRC 11 SYNC_CRC_ANNOT 12 LAST_UID 5 \
                 HIGHESTMODSEQ 10 RECENTUID 0 RECENTTIME 0 LAST_APPENDDATE 0 POP3_LAST_LOGIN 0 \
                 POP3_SHOW_AFTER 0 UIDVALIDITY 99 PARTITION p1 ACL \"bob\tlrswipkxtecdan\t\" \
                 OPTIONS PS QUOTAROOT user.bob CREATEDMODSEQ 1 ANNOTATIONS (%(ENTRY /comment \
                 USERID \"\" MODSEQ 0 VALUE hi)) RECORD (%(UID 2 MODSEQ 9 LAST_UPDATED 0 FLAGS \
                 (\\Deleted \\Expunged \\Seen $Forwarded) INTERNALDATE 0 SIZE 23 GUID {} \
                 ANNOTATIONS (%(ENTRY /vendor/cmu/cyrus-imapd/savedate USERID \"\" MODSEQ 0 \
                 VALUE 7) %(ENTRY /vendor/cmu/cyrus-imapd/createdmodseq USERID \"\" MODSEQ 0 \
                 VALUE 4)))))",
                Guid::of(b"x").to_hex()
            )
        );
        let probe = text(&apply_mailbox(&spec, true));
        assert!(probe.contains("LAST_UID 0 HIGHESTMODSEQ 1 ") && probe.ends_with("RECORD ())"));
        assert!(!probe.contains("SYNC_CRC"));
    }

    #[test]
    fn quota_and_seen() {
        let q = QuotaValue {
            limits: [Some(100000), Some(500), None, None],
            modseq: 12,
            ..Default::default()
        };
        assert_eq!(
            text(&apply_quota("user.bob", &q)),
            "%(ROOT user.bob STORAGE 100000 MESSAGE 500 MODSEQ 12)"
        );
        assert_eq!(
            text(&apply_seen("bob", "u9", "1 1700000000 5 1700000001 1:3,5").unwrap()),
            "%(USERID bob UNIQUEID u9 LASTREAD 1700000000 LASTUID 5 LASTCHANGE 1700000001 \
             SEENUIDS 1:3,5)"
        );
        assert!(apply_seen("bob", "u9", "garbage").is_none());
        assert_eq!(options_string(1 | 4 | 8 | 16 | 2), "PSDA");
    }
}
