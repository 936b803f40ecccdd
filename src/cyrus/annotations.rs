//! Annotation databases: the per-mailbox `cyrus.annotations` (message
//! annotations) and the global `annotations.db` (mailbox and server
//! annotations), and the synthetic `mailbox_annotations` file that upstream
//! `backupcyrusd` builds from the latter.
//!
//! Both files are twoskip databases (`twoskip::read_all` gives their records);
//! this module splits keys and values. Key (`make_key` in `imap/annotate.c`):
//! `<uid or mailbox uniqueid> NUL <entry> NUL <userid> NUL`, the mailbox owner's
//! private annotations under the token `[.OwNeR.]`, shared ones under the empty
//! userid. Value (`make_entry`/`split_attribs`): on x86_64 an 8-byte length field
//! (Cyrus stores `htonl(len)` in an `unsigned long`, so 4 big-endian bytes then 4
//! zero bytes), the value, NUL, a fake content type + NUL, 8 bytes of fake
//! "modifiedsince", the u64 big-endian modseq and one flags byte (bit 0: deleted,
//! a tombstone). Old records may end after the value or the content type.
//!
//! [`mailbox_annotation_rows`] selects what `read_annot` in `imap/backupcyrusd.c`
//! (cyrus-imapd master) puts in its synthetic `mailbox_annotations` file; the
//! JSON itself is printed by `protocol::annotations`. Pure: no I/O. See `doc/cyrus-files.md`,
//! "annotations", and reference §5.1.
#![forbid(unsafe_code)]

use super::{ParseError, ParseErrorKind};

/// The userid token Cyrus stores for the mailbox owner's private annotations.
pub const OWNER_TOKEN: &str = "[.OwNeR.]";
/// Value flags bit 0: the annotation was deleted (tombstone, value is empty).
pub const FLAG_DELETED: u8 = 1;
/// Size of the length field on x86_64 (`sizeof(unsigned long)`).
const LEN_FIELD: usize = 8;

/// Which annotation database the records came from: it decides what the first
/// key part means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationDb {
    /// A mailbox's `cyrus.annotations`: the first key part is a message UID.
    Mailbox,
    /// The global `annotations.db`: the first key part is a mailbox uniqueid, or
    /// empty for server annotations.
    Global,
}

/// One annotation record, key and value split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// Message UID (per-mailbox db); 0 in the global db.
    pub uid: u32,
    /// Mailbox uniqueid (global db; empty for server annotations); empty in the
    /// per-mailbox db.
    pub mailbox_id: Vec<u8>,
    /// Entry name, e.g. `/specialuse`, `/comment`, `/vendor/cmu/cyrus-imapd/thrid`.
    pub entry: Vec<u8>,
    /// Userid; empty for shared (`value.shared`) annotations, [`OWNER_TOKEN`] for
    /// the owner's private ones. None when the key has no userid part (Cyrus's
    /// lookups skip such keys).
    pub userid: Option<Vec<u8>>,
    /// The value bytes (empty for a tombstone, as Cyrus normalises it).
    pub value: Vec<u8>,
    /// Modification sequence (0 in old records).
    pub modseq: u64,
    /// Flags byte ([`FLAG_DELETED`]); 0 in old records.
    pub flags: u8,
}

impl Annotation {
    /// A tombstone: deleted, or with an empty value (Cyrus skips both).
    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_DELETED != 0 || self.value.is_empty()
    }
}

/// Split one key. `what` names the record for errors.
fn split_key(key: &[u8], db: AnnotationDb, what: &str) -> Result<Annotation, ParseError> {
    let first_nul = key
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| ParseError::invalid(what, 0, "key has no NUL after its first part"))?;
    let (first, rest) = (&key[..first_nul], &key[first_nul + 1..]);
    let (uid, mailbox_id) = match db {
        AnnotationDb::Mailbox => (parse_uid(first, what)?, Vec::new()),
        AnnotationDb::Global => (0, first.to_vec()),
    };
    // Entry up to the next NUL; the userid is what follows it up to the next NUL
    // or the end of the key (Cyrus reads it as a C string).
    let (entry, userid) = match rest.iter().position(|&b| b == 0) {
        Some(i) => {
            let u = &rest[i + 1..];
            let end = u.iter().position(|&b| b == 0).unwrap_or(u.len());
            (&rest[..i], Some(u[..end].to_vec()))
        }
        None => (rest, None),
    };
    Ok(Annotation {
        uid,
        mailbox_id,
        entry: entry.to_vec(),
        userid,
        value: Vec::new(),
        modseq: 0,
        flags: 0,
    })
}

fn parse_uid(digits: &[u8], what: &str) -> Result<u32, ParseError> {
    let bad = || ParseError::invalid(what, 0, "message annotation key does not start with a uid");
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(bad)
}

/// Parse one value into (value, modseq, flags) as `split_attribs` does, but with
/// every length checked. A deleted record's value comes back empty.
pub fn parse_annotation_value(data: &[u8], what: &str) -> Result<(Vec<u8>, u64, u8), ParseError> {
    if data.len() < LEN_FIELD {
        return Err(ParseError::truncated(
            what,
            0,
            LEN_FIELD as u64,
            data.len() as u64,
        ));
    }
    // The first four bytes are htonl(len); the next four are the rest of the
    // little-endian unsigned long, zero for any length Cyrus can store.
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let body = &data[LEN_FIELD..];
    let value = body.get(..len).ok_or_else(|| {
        ParseError::new(
            what,
            LEN_FIELD as u64,
            ParseErrorKind::BadSize {
                field: "value length",
                found: len as u64,
                expected: body.len() as u64,
            },
        )
    })?;
    // After the value: NUL, content type + NUL, 8 bytes modifiedsince, modseq, flags.
    let mut at = len.saturating_add(1);
    let mut modseq = 0;
    let mut flags = 0;
    if at < body.len() {
        let ct_end = body[at..]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(body.len() - at);
        at = at + ct_end + 1 + LEN_FIELD;
    }
    if at < body.len() {
        let m = body.get(at..at + 8).ok_or_else(|| {
            ParseError::truncated(what, (LEN_FIELD + at) as u64, 8, (body.len() - at) as u64)
        })?;
        let mut b = [0u8; 8];
        b.copy_from_slice(m);
        modseq = u64::from_be_bytes(b);
        at += 8;
    }
    if let Some(&f) = body.get(at) {
        flags = f;
    }
    let value = if flags & FLAG_DELETED != 0 {
        Vec::new()
    } else {
        value.to_vec()
    };
    Ok((value, modseq, flags))
}

/// Split every record of an annotation database (records as `twoskip::read_all`
/// returns them, in key order).
pub fn parse_annotations(
    records: &[(Vec<u8>, Vec<u8>)],
    db: AnnotationDb,
) -> Result<Vec<Annotation>, ParseError> {
    let mut out = Vec::with_capacity(records.len());
    for (i, (key, val)) in records.iter().enumerate() {
        let what = format!(
            "annotation record {} (key {:?})",
            i + 1,
            String::from_utf8_lossy(key)
        );
        let mut a = split_key(key, db, &what)?;
        let (value, modseq, flags) = parse_annotation_value(val, &what)?;
        a.value = value;
        a.modseq = modseq;
        a.flags = flags;
        out.push(a);
    }
    Ok(out)
}

/// The rows of upstream's synthetic `mailbox_annotations` file for the mailbox
/// `uniqueid` owned by `owner` (None for a shared mailbox): every live
/// annotation of that mailbox in the global db, in key order, as
/// `[entry, userid, value]`. `protocol::annotations::mailbox_annotations_json`
/// prints them as upstream does; no rows means upstream has no file.
///
/// Upstream details kept: the owner token becomes `owner` (a shared mailbox's
/// owner-token rows are dropped, as `json_pack` fails on a NULL string); a value
/// is cut at its first NUL (`buf_cstring`); rows whose strings are not valid
/// UTF-8 are dropped (`json_pack` refuses them); keys without a userid part are
/// skipped (`find_p`).
pub fn mailbox_annotation_rows(
    annotations: &[Annotation],
    uniqueid: &str,
    owner: Option<&str>,
) -> Vec<[Vec<u8>; 3]> {
    let mut rows = Vec::new();
    for a in annotations {
        if a.uid != 0 || a.mailbox_id != uniqueid.as_bytes() || a.is_tombstone() {
            continue;
        }
        let Some(userid) = &a.userid else { continue };
        let value = match a.value.iter().position(|&b| b == 0) {
            Some(i) => &a.value[..i],
            None => &a.value[..],
        };
        let userid: &[u8] = if userid == OWNER_TOKEN.as_bytes() {
            match owner {
                Some(o) => o.as_bytes(),
                None => continue,
            }
        } else {
            userid
        };
        let row = [a.entry.to_vec(), userid.to_vec(), value.to_vec()];
        if row.iter().any(|f| std::str::from_utf8(f).is_err()) {
            continue;
        }
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value as Cyrus 3.6 on x86_64 writes it (`make_entry`).
    fn entry(value: &[u8], modseq: u64, flags: u8) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(value.len() as u32).to_be_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(value);
        v.push(0);
        v.extend_from_slice(b"text/plain\0");
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&modseq.to_be_bytes());
        v.push(flags);
        v
    }

    fn key(first: &str, entry: &str, userid: &str) -> Vec<u8> {
        format!("{first}\0{entry}\0{userid}\0").into_bytes()
    }

    #[test]
    fn value_full_layout() {
        let (v, m, f) = parse_annotation_value(&entry(b"\\Sent", 7, 0), "t").unwrap();
        assert_eq!((v.as_slice(), m, f), (&b"\\Sent"[..], 7, 0));
    }

    #[test]
    fn value_tombstone_is_empty() {
        let (v, m, f) = parse_annotation_value(&entry(b"gone", 9, 1), "t").unwrap();
        assert_eq!((v.len(), m, f), (0, 9, FLAG_DELETED));
    }

    #[rustfmt::skip]
    #[test]
    fn value_short_old_forms() {
        // Ends right after the value.
        let d = [0, 0, 0, 2, 0, 0, 0, 0, b'h', b'i'];
        assert_eq!(parse_annotation_value(&d, "t").unwrap(), (b"hi".to_vec(), 0, 0));
        // Value, NUL, content type, NUL, modifiedsince: no modseq, no flags.
        let mut d = vec![0, 0, 0, 2, 0, 0, 0, 0, b'h', b'i', 0];
        d.extend_from_slice(b"text/plain\0");
        d.extend_from_slice(&[0; 8]);
        assert_eq!(parse_annotation_value(&d, "t").unwrap(), (b"hi".to_vec(), 0, 0));
    }

    #[test]
    fn value_errors_are_typed() {
        let e = parse_annotation_value(&[0, 0, 0], "t").unwrap_err();
        assert!(matches!(
            e.kind,
            ParseErrorKind::Truncated { need: 8, have: 3 }
        ));
        let e = parse_annotation_value(&[0, 0, 0, 9, 0, 0, 0, 0, b'x'], "t").unwrap_err();
        assert!(
            matches!(e.kind, ParseErrorKind::BadSize { found: 9, .. }),
            "{e}"
        );
        // Modseq cut short.
        let mut d = entry(b"x", 1, 0);
        d.truncate(d.len() - 5);
        assert!(parse_annotation_value(&d, "t").is_err());
    }

    #[test]
    fn keys_of_both_databases() {
        let recs = vec![
            (key("12", "/comment", ""), entry(b"c", 1, 0)),
            (key("12", "/comment", "bob"), entry(b"p", 2, 0)),
        ];
        let a = parse_annotations(&recs, AnnotationDb::Mailbox).unwrap();
        assert_eq!(a[0].uid, 12);
        assert_eq!(a[0].entry, b"/comment");
        assert_eq!(a[0].userid.as_deref(), Some(&b""[..]));
        assert_eq!(a[1].userid.as_deref(), Some(&b"bob"[..]));
        let e = parse_annotations(
            &[(key("x1", "/c", ""), entry(b"c", 1, 0))],
            AnnotationDb::Mailbox,
        )
        .unwrap_err();
        assert!(e.to_string().contains("uid"), "{e}");
        let g = parse_annotations(
            &[(
                key("abc-1", "/specialuse", OWNER_TOKEN),
                entry(b"\\Sent", 1, 0),
            )],
            AnnotationDb::Global,
        )
        .unwrap();
        assert_eq!((g[0].uid, g[0].mailbox_id.as_slice()), (0, &b"abc-1"[..]));
        // No userid part at all.
        let n = parse_annotations(
            &[(b"u\0/e".to_vec(), entry(b"v", 1, 0))],
            AnnotationDb::Global,
        )
        .unwrap();
        assert_eq!(n[0].userid, None);
    }

    #[test]
    fn rows_select_owner_and_skip_tombstones() {
        let recs = vec![
            (key("abc", "/comment", ""), entry(b"a \"q\"", 1, 0)),
            (key("abc", "/private", OWNER_TOKEN), entry(b"mine", 1, 0)),
            (key("abc", "/x", "carol"), entry(b"gone", 1, FLAG_DELETED)),
            (key("abd", "/other", ""), entry(b"o", 1, 0)),
        ];
        let a = parse_annotations(&recs, AnnotationDb::Global).unwrap();
        let rows = mailbox_annotation_rows(&a, "abc", Some("bob"));
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1],
            [b"/private".to_vec(), b"bob".to_vec(), b"mine".to_vec()]
        );
        assert!(mailbox_annotation_rows(&a, "zzz", Some("bob")).is_empty());
        // Shared mailbox: owner rows dropped.
        assert_eq!(mailbox_annotation_rows(&a, "abc", None).len(), 1);
    }

    #[test]
    fn rows_cut_at_nul_and_drop_invalid_utf8() {
        let recs = vec![
            (key("m", "/a", ""), entry(b"before\0after", 1, 0)),
            (key("m", "/b", ""), entry(b"\xff", 1, 0)),
        ];
        let a = parse_annotations(&recs, AnnotationDb::Global).unwrap();
        let rows = mailbox_annotation_rows(&a, "m", None);
        assert_eq!(
            rows,
            vec![[b"/a".to_vec(), b"".to_vec(), b"before".to_vec()]]
        );
    }
}
