//! The mailbox list (`mailboxes.db`, the key layout of Cyrus 3.6 to 3.13) and
//! mailbox names.
//!
//! Input is the ordered records of the twoskip file (`twoskip::read_all`).
//! Every supported version keeps two records per mailbox: `N<dbname>` (the entry
//! by name) and `I<uniqueid>` (the entry by id, which alone carries the name
//! history); 3.13 adds a third, `J<userid> RS <jmapid>`, and a `J` field in the
//! values. This module joins `N` and `I` into [`MailboxEntry`] values, converts
//! between the database name form (`dbname`: domain 0x1D, hierarchy 0x1F, literal
//! `.`) and Cyrus's internal name form (`domain!user.bob.Sent`, `^` for a `.`),
//! and answers "which users exist" and "which entries belong to this user". The
//! other record kinds (reverse ACLs, user groups, JMAP ids, and any kind no
//! supported version writes) are lookup indexes Cyrus never lists from: they are
//! skipped and counted (`kinds.rs`, which also holds the table of what each
//! version writes).
//!
//! Value parsing follows `mboxlist_parse_entry` in `imap/mboxlist.c` (3.6.1 to
//! 3.13), including its two pre-DList value forms; name conversion follows
//! `mbname_from_dbname` / `mbname_intname` / `mbname_dbname`. A pre-3.6 database
//! (plain internal names as keys) is refused, decided the way Cyrus's own upgrade
//! check decides it: Cyrus's `ctl_cyrusdb -r` converts it. Facts and examples:
//! `doc/cyrus-files.md`, section "mailboxes.db".
#![forbid(unsafe_code)]

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::ParseError;
use super::dlist::{Dlist, parse_decimal, parse_dlist};

mod kinds;
mod mbtype;
mod name;

pub use kinds::{KindCounts, RecordKind, kind_of};
pub use mbtype::MbType;
pub use name::{MbName, dbname_to_internal, internal_to_dbname};

/// Domain separator in a dbname (GS).
pub const DB_DOMAINSEP: u8 = 0x1d;
/// Hierarchy separator in a dbname (US).
pub const DB_HIERSEP: u8 = 0x1f;
/// Field separator inside `A`, `UG` and `J` keys (RS).
pub const DB_RECSEP: u8 = 0x1e;

/// One former name of a mailbox, from the `H` list of its `I` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// Internal name it had.
    pub name: String,
    /// The same name in dbname form.
    #[serde(skip)]
    pub dbname: Vec<u8>,
    /// When the entry was renamed away from this name (epoch seconds).
    pub mtime: i64,
    pub uidvalidity: u64,
    pub createdmodseq: u64,
    pub foldermodseq: u64,
    pub mbtype: MbType,
    pub partition: Option<String>,
}

/// What the name of a `DELETED.*` (delayed-delete) mailbox says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletedInfo {
    /// Internal name the mailbox had before deletion, e.g. `user.bob.Old`.
    pub original_name: String,
    /// Deletion time as Cyrus printed it in the name (`%X`, uppercase hex).
    pub hex_timestamp: String,
    /// The same time as epoch seconds.
    pub timestamp: u64,
}

/// One mailbox-list entry (an `N` record joined with its `I` record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MailboxEntry {
    /// Internal dotted name, `^` for a `.` inside a component.
    pub name: String,
    /// The key without its `N`: the database name.
    #[serde(skip)]
    pub dbname: Vec<u8>,
    pub uniqueid: Option<String>,
    /// The JMAP id (`J` field; Cyrus 3.13 on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jmapid: Option<String>,
    /// Partition name; absent on some tombstones (Cyrus drops it then).
    pub partition: Option<String>,
    pub mbtype: MbType,
    /// Identifier/rights pairs in ACL order.
    pub acl: Vec<(String, String)>,
    pub uidvalidity: u64,
    pub createdmodseq: u64,
    pub foldermodseq: u64,
    /// When this entry was last written (epoch seconds).
    pub mtime: i64,
    /// Murder server name (`S`), or the `server!` prefix of an old value.
    pub server: Option<String>,
    /// Only in the 2.5/3.0 value form `(uniqueid .. specialuse ..)`.
    pub legacy_specialuse: Option<String>,
    /// Former names, oldest first, from the `I` record that names this entry.
    pub name_history: Vec<HistoryEntry>,
    /// Set for a `DELETED.*` mailbox.
    pub deleted: Option<DeletedInfo>,
    /// Owner (`bob` or `bob@example.com`), if this is a user's mailbox.
    pub userid: Option<String>,
}

/// The parsed mailbox list, entries in dbname (key) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mboxlist {
    entries: Vec<MailboxEntry>,
    /// The `deletedprefix` the names were interpreted with.
    pub deletedprefix: String,
    /// userid -> indexes into `entries`, in entry order (built once, so that
    /// per-user lookups stay cheap on servers with 10^5 mailboxes).
    by_user: HashMap<String, Vec<usize>>,
    /// The records by kind, including the skipped ones.
    pub kinds: KindCounts,
}

/// Build the mailbox list from the twoskip records of a `mailboxes.db` written by
/// Cyrus 3.6 to 3.13.
///
/// `deletedprefix` is the imapd.conf option (default `DELETED`).
pub fn parse_mboxlist(
    records: &[(Vec<u8>, Vec<u8>)],
    deletedprefix: &str,
) -> Result<Mboxlist, ParseError> {
    kinds::check_layout(records, |v| parse_entry(b"x", v, deletedprefix).is_ok())?;
    let mut kinds = KindCounts::of(records);
    // uniqueid -> (dbname the I record names, its history)
    let mut by_id: HashMap<&[u8], (Vec<u8>, Vec<HistoryEntry>)> = HashMap::new();
    for (key, val) in records.iter().filter(|(k, _)| k.first() == Some(&b'I')) {
        let what = || record_what(key);
        let d = parse_dlist(val).map_err(|e| in_value(e, &what()))?;
        let dbname = match d.get("N").and_then(Dlist::as_bytes) {
            Some(n) => n.to_vec(),
            None => {
                // The first decisive record had N (kinds::check_layout), so this
                // one is damaged rather than of an older layout.
                return Err(ParseError::invalid(
                    what(),
                    0,
                    "I record without N (the name it indexes)",
                ));
            }
        };
        let history = parse_history(&d, deletedprefix, &what())?;
        if d.get("J").is_some() {
            kinds.jmapid_fields += 1;
        }
        by_id.insert(&key[1..], (dbname, history));
    }
    let mut entries = Vec::new();
    for (key, val) in records.iter().filter(|(k, _)| k.first() == Some(&b'N')) {
        let dbname = key[1..].to_vec();
        let mut e =
            parse_entry(&dbname, val, deletedprefix).map_err(|e| in_value(e, &record_what(key)))?;
        if let Some(id) = &e.uniqueid
            && let Some((idname, hist)) = by_id.get(id.as_bytes())
            && *idname == dbname
        {
            e.name_history = hist.clone();
        }
        if e.jmapid.is_some() {
            kinds.jmapid_fields += 1;
        }
        entries.push(e);
    }
    let mut by_user: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some(u) = &e.userid {
            by_user.entry(u.clone()).or_default().push(i);
        }
    }
    Ok(Mboxlist {
        entries,
        deletedprefix: deletedprefix.to_string(),
        by_user,
        kinds,
    })
}

fn record_what(key: &[u8]) -> String {
    format!("mailboxes.db value of {}", show_bytes(key))
}

/// Prefix the DList error's `what` with the record it came from.
fn in_value(mut e: ParseError, what: &str) -> ParseError {
    e.what = format!("{what}: {}", e.what);
    e
}

/// Printable form of a key: 0x1F as `^_`, 0x1D as `^]`, other bytes escaped.
pub(crate) fn show_bytes(b: &[u8]) -> String {
    let mut s = String::from("\"");
    for &c in b {
        match c {
            DB_HIERSEP => s.push_str("^_"),
            DB_DOMAINSEP => s.push_str("^]"),
            0x20..=0x7e if c != b'"' && c != b'\\' => s.push(char::from(c)),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    s
}

fn text(b: &[u8], what: &str, field: &str) -> Result<String, ParseError> {
    String::from_utf8(b.to_vec())
        .map_err(|_| ParseError::invalid(what, 0, format!("{field} is not UTF-8")))
}

fn opt_text(d: &Dlist, key: &str, what: &str) -> Result<Option<String>, ParseError> {
    match d.get(key).and_then(Dlist::as_bytes) {
        Some(b) => text(b, what, key).map(Some),
        None => Ok(None),
    }
}

fn num(d: &Dlist, key: &str, what: &str) -> Result<u64, ParseError> {
    match d.get(key) {
        None | Some(Dlist::Nil) => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| {
            ParseError::invalid(what, 0, format!("field {key} is not a decimal number"))
        }),
    }
}

fn signed(n: u64, key: &str, what: &str) -> Result<i64, ParseError> {
    i64::try_from(n).map_err(|_| ParseError::invalid(what, 0, format!("field {key} is too large")))
}

fn mbtype_of(d: &Dlist, what: &str) -> Result<MbType, ParseError> {
    match d.get("T").and_then(Dlist::as_str) {
        None => Ok(MbType::default()),
        Some(s) => MbType::parse(s)
            .ok_or_else(|| ParseError::invalid(what, 0, format!("unknown mbtype {s:?}"))),
    }
}

/// Parse one `N` record value (any of the three forms 3.6 reads).
fn parse_entry(dbname: &[u8], val: &[u8], dp: &str) -> Result<MailboxEntry, ParseError> {
    let what = "entry";
    let mbname = MbName::from_dbname(dbname, dp)?;
    let mut e = MailboxEntry {
        name: mbname.to_internal(dp),
        dbname: dbname.to_vec(),
        uniqueid: None,
        jmapid: None,
        partition: None,
        mbtype: MbType::default(),
        acl: Vec::new(),
        uidvalidity: 0,
        createdmodseq: 0,
        foldermodseq: 0,
        mtime: 0,
        server: None,
        legacy_specialuse: None,
        name_history: Vec::new(),
        deleted: mbname.deleted_info(dp),
        userid: mbname.userid(),
    };
    match val.first() {
        None => return Err(ParseError::invalid(what, 0, "empty value")),
        Some(b'%') => {
            let d = parse_dlist(val)?;
            e.mbtype = mbtype_of(&d, what)?;
            e.uniqueid = opt_text(&d, "I", what)?;
            e.jmapid = opt_text(&d, "J", what)?;
            e.partition = opt_text(&d, "P", what)?;
            e.server = opt_text(&d, "S", what)?;
            e.uidvalidity = num(&d, "V", what)?;
            e.createdmodseq = num(&d, "C", what)?;
            e.foldermodseq = num(&d, "F", what)?;
            e.mtime = signed(num(&d, "M", what)?, "M", what)?;
            e.acl = acl_of(&d, what)?;
        }
        Some(_) => parse_legacy_value(val, &mut e)?,
    }
    Ok(e)
}

/// The `A` kvlist as pairs.
fn acl_of(d: &Dlist, what: &str) -> Result<Vec<(String, String)>, ParseError> {
    let Some(a) = d.get("A") else {
        return Ok(Vec::new());
    };
    let items = a
        .as_kvlist()
        .ok_or_else(|| ParseError::invalid(what, 0, "A (ACL) is not a kvlist"))?;
    items
        .iter()
        .map(|(k, v)| {
            let rights = match v {
                Dlist::Nil => String::new(),
                Dlist::Atom(b) => text(b, what, "ACL rights")?,
                _ => return Err(ParseError::invalid(what, 0, "ACL rights are not a string")),
            };
            Ok((k.clone(), rights))
        })
        .collect()
}

/// Split Cyrus's tab-separated ACL string (`id TAB rights TAB ...`) the way
/// `acl_to_json` / `mailbox_acl_to_dlist` do: a trailing TAB is optional, an
/// identifier without a TAB after it ends the list.
pub fn split_acl(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let Some((id, tail)) = rest.split_once('\t') else {
            break;
        };
        let (rights, next) = tail.split_once('\t').unwrap_or((tail, ""));
        out.push((id.to_string(), rights.to_string()));
        rest = next;
    }
    out
}

/// The two pre-DList forms: `[(uniqueid X specialuse Y) ]<mbtype> [server!]partition <acl>`.
fn parse_legacy_value(val: &[u8], e: &mut MailboxEntry) -> Result<(), ParseError> {
    let what = "entry (pre-DList form)";
    let s =
        std::str::from_utf8(val).map_err(|_| ParseError::invalid(what, 0, "value is not UTF-8"))?;
    let mut rest = s;
    if let Some(inner) = rest.strip_prefix('(') {
        let close = inner
            .find(')')
            .ok_or_else(|| ParseError::invalid(what, 0, "unterminated ( ... ) prefix"))?;
        let mut words = inner[..close].split(' ');
        while let (Some(k), Some(v)) = (words.next(), words.next()) {
            match k {
                "uniqueid" => e.uniqueid = Some(v.to_string()),
                "specialuse" => e.legacy_specialuse = Some(v.to_string()),
                _ => {}
            }
        }
        rest = inner[close + 1..]
            .strip_prefix(' ')
            .unwrap_or(&inner[close + 1..]);
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let n = parse_decimal(&rest.as_bytes()[..digits]).unwrap_or(0);
    let n =
        u32::try_from(n).map_err(|_| ParseError::invalid(what, 0, "mbtype number too large"))?;
    e.mbtype = MbType::from_number(n)
        .ok_or_else(|| ParseError::invalid(what, 0, format!("unknown mbtype {n}")))?;
    rest = &rest[digits..];
    rest = rest.strip_prefix(' ').unwrap_or(rest);
    let (loc, acl) = rest.split_once(' ').unwrap_or((rest, ""));
    match loc.split_once('!') {
        Some((server, part)) => {
            e.server = Some(server.to_string());
            e.partition = Some(part.to_string());
        }
        None => e.partition = Some(loc.to_string()),
    }
    e.acl = split_acl(acl);
    Ok(())
}

fn parse_history(d: &Dlist, dp: &str, what: &str) -> Result<Vec<HistoryEntry>, ParseError> {
    let Some(h) = d.get("H") else {
        return Ok(Vec::new());
    };
    let items = h
        .as_list()
        .ok_or_else(|| ParseError::invalid(what, 0, "H (name history) is not a list"))?;
    items
        .iter()
        .map(|item| {
            if item.as_kvlist().is_none() {
                return Err(ParseError::invalid(
                    what,
                    0,
                    "name history item is not a kvlist",
                ));
            }
            let dbname = item
                .get("N")
                .and_then(Dlist::as_bytes)
                .unwrap_or_default()
                .to_vec();
            Ok(HistoryEntry {
                name: MbName::from_dbname(&dbname, dp)?.to_internal(dp),
                dbname,
                mtime: signed(num(item, "M", what)?, "M", what)?,
                uidvalidity: num(item, "V", what)?,
                createdmodseq: num(item, "C", what)?,
                foldermodseq: num(item, "F", what)?,
                mbtype: mbtype_of(item, what)?,
                partition: opt_text(item, "P", what)?,
            })
        })
        .collect()
}

impl Mboxlist {
    /// Every userid that owns at least one entry (INBOX, sub-folder, DELETED
    /// copy, tombstone or placeholder), in dbname order, each once. With
    /// virtual domains the userid is `localpart@domain`.
    pub fn users(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.entries
            .iter()
            .filter_map(|e| e.userid.clone())
            .filter(|u| seen.insert(u.clone()))
            .collect()
    }

    /// The entries owned by `userid`: INBOX, sub-folders and the user's
    /// `DELETED.*` mailboxes, including tombstones and intermediates (check
    /// [`MbType::is_openable`]).
    pub fn mailboxes_of_user(&self, userid: &str) -> Vec<&MailboxEntry> {
        self.by_user
            .get(userid)
            .map(|ix| ix.iter().filter_map(|&i| self.entries.get(i)).collect())
            .unwrap_or_default()
    }

    /// All entries, in dbname (key) order.
    pub fn entries(&self) -> &[MailboxEntry] {
        &self.entries
    }

    /// The entry with this internal name.
    pub fn get(&self, name: &str) -> Option<&MailboxEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// What `ctl_mboxlist -d` prints for this list (`dump_cb`, 3.6.1 to 3.13): one
    /// object per entry keyed by internal name; tombstones are included,
    /// intermediates only when `with_intermediates` (`-y`). Like Cyrus, it
    /// reads only the `N` records, so `name_history` is always empty, and a
    /// missing partition/server/uniqueid is left out.
    pub fn to_ctl_mboxlist_json_with(&self, with_intermediates: bool) -> Value {
        let mut top = Map::new();
        for e in &self.entries {
            if e.mbtype.is_intermediate() && !with_intermediates {
                continue;
            }
            let mut o = Map::new();
            o.insert("name".into(), json!(e.name));
            o.insert("mtime".into(), json!(e.mtime.to_string()));
            o.insert("uidvalidity".into(), json!(e.uidvalidity.to_string()));
            o.insert("createdmodseq".into(), json!(e.createdmodseq.to_string()));
            o.insert("foldermodseq".into(), json!(e.foldermodseq.to_string()));
            o.insert("mbtype".into(), json!(e.mbtype.to_cyrus_string()));
            if let Some(p) = &e.partition {
                o.insert("partition".into(), json!(p));
            }
            if let Some(s) = &e.server {
                o.insert("server".into(), json!(s));
            }
            let acl: Map<String, Value> =
                e.acl.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            o.insert("acl".into(), Value::Object(acl));
            if let Some(u) = &e.uniqueid {
                o.insert("uniqueid".into(), json!(u));
            }
            // 3.13's ctl_mboxlist prints it (when set); older ones never have one.
            if let Some(j) = &e.jmapid {
                o.insert("jmapId".into(), json!(j));
            }
            if let Some(s) = &e.legacy_specialuse {
                o.insert("legacy_specialuse".into(), json!(s));
            }
            o.insert("name_history".into(), json!([]));
            top.insert(e.name.clone(), Value::Object(o));
        }
        Value::Object(top)
    }

    /// [`Self::to_ctl_mboxlist_json_with`] as plain `ctl_mboxlist -d` does it.
    pub fn to_ctl_mboxlist_json(&self) -> Value {
        self.to_ctl_mboxlist_json_with(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (k.to_vec(), v.to_vec())
    }

    #[test]
    fn joins_n_and_i_records() {
        let recs = vec![
            rec(b"Iu1", b"%(T e N user\x1fbob\x1fNew P default M 5 H (%(N user\x1fbob\x1fOld M 4 T e P default)))"),
            rec(b"Nuser\x1fbob", b"%(T el I u0 P default V 7 C 1 F 2 M 3 A %(bob lrs anyone p))"),
            rec(b"Nuser\x1fbob\x1fNew", b"%(T e I u1 P default M 5)"),
        ];
        let l = parse_mboxlist(&recs, "DELETED").unwrap();
        assert_eq!(l.entries.len(), 2);
        let bob = &l.entries[0];
        assert_eq!(bob.name, "user.bob");
        assert!(bob.mbtype.is_legacy_dirs());
        assert_eq!(
            bob.acl,
            vec![("bob".into(), "lrs".into()), ("anyone".into(), "p".into())]
        );
        assert_eq!(
            (
                bob.uidvalidity,
                bob.createdmodseq,
                bob.foldermodseq,
                bob.mtime
            ),
            (7, 1, 2, 3)
        );
        let new = &l.entries[1];
        assert_eq!(new.name_history.len(), 1);
        assert_eq!(new.name_history[0].name, "user.bob.Old");
        assert_eq!(l.users(), vec!["bob".to_string()]);
    }

    #[test]
    fn pre36_db_is_refused_with_advice() {
        let recs = vec![rec(b"user.bob", b"%(T e P default)")];
        let e = parse_mboxlist(&recs, "DELETED").unwrap_err();
        assert!(e.to_string().contains("ctl_cyrusdb -r"), "{e}");
        let recs = vec![rec(b"$RACL$S$x", b""), rec(b"Nuser\x1fa", b"%(T e)")];
        assert!(parse_mboxlist(&recs, "DELETED").is_err());
    }

    #[rustfmt::skip]
    #[test]
    fn every_kind_a_supported_version_writes_is_read_or_skipped() {
        // 3.13: J keys and J fields, UG (3.12) and reverse ACL keys, and a key of a
        // kind no supported version writes.
        let recs = vec![
            rec(b"AS\x1e", b""),
            rec(b"AU\x1ebob\x1euser\x1fbob", b""),
            rec(b"Iu1", b"%(T e N user\x1fbob J P-F P default H ())"),
            rec(b"Jbob\x1eP-F", b"%(T e N user\x1fbob I u1 P default)"),
            rec(b"Nuser\x1fbob", b"%(T e I u1 J P-F P default)"),
            rec(b"UGbob\x1estaff", b""),
            rec(b"UGstaff\x1ebob", b""),
            rec(b"Zfuture", b"x"),
        ];
        let l = parse_mboxlist(&recs, "DELETED").unwrap();
        assert_eq!(l.entries.len(), 1);
        assert_eq!(l.entries[0].jmapid.as_deref(), Some("P-F"));
        assert_eq!(l.users(), ["bob"]);
        let k = &l.kinds;
        assert_eq!(
            (k.names, k.ids, k.reverse_acls, k.jmap_ids, k.user_groups, k.unknown, k.jmapid_fields),
            (1, 1, 2, 1, 2, 1, 2)
        );
        assert_eq!(k.newest_marker(), Some((3, 13)));
        let j = l.to_ctl_mboxlist_json();
        assert_eq!(j["user.bob"]["jmapId"], "P-F");
    }

    #[test]
    fn legacy_value_forms() {
        let recs = vec![
            rec(b"Nuser\x1fa", b"0 default a\tlrs\tanyone\tp\t"),
            rec(
                b"Nuser\x1fb",
                b"(uniqueid 00aa specialuse \\Sent) 512 p2 b\tlrs\t",
            ),
            rec(b"Nuser\x1fc", b"16 imap9!default c\tlrs"),
        ];
        let l = parse_mboxlist(&recs, "DELETED").unwrap();
        let [a, b, c] = &l.entries[..] else { panic!() };
        assert_eq!(a.acl.len(), 2);
        assert_eq!(b.uniqueid.as_deref(), Some("00aa"));
        assert_eq!(b.legacy_specialuse.as_deref(), Some("\\Sent"));
        assert_eq!(b.mbtype.to_cyrus_string(), "el");
        assert_eq!(b.partition.as_deref(), Some("p2"));
        assert_eq!(
            (c.server.as_deref(), c.mbtype.is_remote()),
            (Some("imap9"), true)
        );
        assert_eq!(c.acl, vec![("c".into(), "lrs".into())]);
    }

    #[test]
    fn bad_values_are_errors() {
        for v in [
            &b""[..],
            b"%(T q)",
            b"%(V x)",
            b"%(A x)",
            b"%(T e",
            b"%(M 99999999999999999999)",
        ] {
            let recs = vec![rec(b"Nuser\x1fa", v)];
            assert!(
                parse_mboxlist(&recs, "DELETED").is_err(),
                "{}",
                String::from_utf8_lossy(v)
            );
        }
        for v in [&b"%(T e)"[..], b"%(N a H x)", b"%(N a H (x))", b"x"] {
            let recs = vec![rec(b"Iu", v)];
            assert!(
                parse_mboxlist(&recs, "DELETED").is_err(),
                "{}",
                String::from_utf8_lossy(v)
            );
        }
    }

    #[test]
    fn acl_string_split() {
        assert_eq!(split_acl("a\tb\tc\td\t").len(), 2);
        assert_eq!(split_acl("a\tb"), vec![("a".into(), "b".into())]);
        assert!(split_acl("a").is_empty());
        assert!(split_acl("").is_empty());
    }
}
