//! Typed views of IMAP response data (LIST, SELECT, FETCH, ACL), built from the
//! tokenised [`Response`]s of `imap/parse.rs`. Pure.
#![forbid(unsafe_code)]

use super::date::parse_internaldate;
use super::parse::{Response, Value};

/// One `* LIST` / `* LSUB` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Name attributes such as `\HasNoChildren`, `\Noselect`.
    pub flags: Vec<String>,
    /// The hierarchy delimiter, `None` for NIL.
    pub delimiter: Option<char>,
    /// The mailbox name as the server sent it (modified UTF-7).
    pub name: String,
}

/// What SELECT / EXAMINE reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectInfo {
    pub exists: u32,
    pub recent: u32,
    pub uidvalidity: u32,
    pub uidnext: u32,
    /// `HIGHESTMODSEQ` (CONDSTORE), 0 if absent.
    pub highestmodseq: u64,
    /// `FLAGS` untagged response.
    pub flags: Vec<String>,
    /// `PERMANENTFLAGS` response code.
    pub permanent_flags: Vec<String>,
    /// `MAILBOXID` (RFC 8474), Cyrus's uniqueid.
    pub mailboxid: Option<String>,
    /// The tagged OK said `[READ-ONLY]`.
    pub read_only: bool,
}

/// One message's FETCH data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchItem {
    /// Message sequence number.
    pub seq: u32,
    pub uid: Option<u32>,
    pub flags: Option<Vec<String>>,
    /// INTERNALDATE as (Unix seconds, zone minutes east of UTC).
    pub internaldate: Option<(i64, i32)>,
    pub rfc822_size: Option<u64>,
    /// `BODY[...]`, `BINARY[...]` or `RFC822` bytes (the first such item).
    pub body: Option<Vec<u8>>,
    /// `MODSEQ (n)`.
    pub modseq: Option<u64>,
    /// Cyrus's `DIGEST.SHA1` (the message GUID, 40 hex digits).
    pub digest_sha1: Option<String>,
    /// Every other item, raw (e.g. `ANNOTATION`, `ENVELOPE`), name uppercased.
    pub other: Vec<(String, Value)>,
}

fn text(v: &Value) -> Option<String> {
    v.as_text()
}

fn flag_list(v: &Value) -> Vec<String> {
    v.as_list()
        .map(|l| l.iter().filter_map(text).collect())
        .unwrap_or_default()
}

/// Turn a `* LIST`/`* LSUB` data response into an entry (`kind` is "LIST" or "LSUB").
pub fn list_entry(values: &[Value], kind: &str) -> Option<ListEntry> {
    let [k, flags, delim, name, ..] = values else {
        return None;
    };
    if !k.is_atom(kind) {
        return None;
    }
    let delimiter = match delim {
        Value::Nil => None,
        v => v.as_text().and_then(|s| s.chars().next()),
    };
    Some(ListEntry {
        flags: flag_list(flags),
        delimiter,
        name: name.as_text()?,
    })
}

/// Fold the untagged responses of a SELECT/EXAMINE into a [`SelectInfo`].
pub fn select_info(untagged: &[Response]) -> SelectInfo {
    let mut info = SelectInfo::default();
    let u32_of = |v: Option<&Value>| {
        v.and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    for r in untagged {
        match r {
            Response::Data(v) => match v.as_slice() {
                [n, word, ..] if word.is_atom("EXISTS") => {
                    info.exists = u32_of(Some(n)).unwrap_or(0)
                }
                [n, word, ..] if word.is_atom("RECENT") => {
                    info.recent = u32_of(Some(n)).unwrap_or(0)
                }
                [word, flags, ..] if word.is_atom("FLAGS") => info.flags = flag_list(flags),
                _ => {}
            },
            Response::UntaggedStatus(st) => {
                if let Some(a) = st.code_args("UIDVALIDITY") {
                    info.uidvalidity = u32_of(a.first()).unwrap_or(0);
                } else if let Some(a) = st.code_args("UIDNEXT") {
                    info.uidnext = u32_of(a.first()).unwrap_or(0);
                } else if let Some(a) = st.code_args("HIGHESTMODSEQ") {
                    info.highestmodseq = a.first().and_then(Value::as_u64).unwrap_or(0);
                } else if let Some(a) = st.code_args("PERMANENTFLAGS") {
                    info.permanent_flags = a.first().map(flag_list).unwrap_or_default();
                } else if let Some(a) = st.code_args("MAILBOXID") {
                    info.mailboxid = a
                        .first()
                        .and_then(Value::as_list)
                        .and_then(|l| l.first())
                        .and_then(text);
                }
            }
            _ => {}
        }
    }
    info
}

/// Turn a `* n FETCH (...)` data response into a [`FetchItem`].
pub fn fetch_item(values: &[Value]) -> Option<FetchItem> {
    let [seq, word, Value::List(items), ..] = values else {
        return None;
    };
    if !word.is_atom("FETCH") {
        return None;
    }
    let mut out = FetchItem {
        seq: u32::try_from(seq.as_u64()?).ok()?,
        ..FetchItem::default()
    };
    let mut it = items.iter();
    while let (Some(key), Some(val)) = (it.next(), it.next()) {
        let name = key.as_text()?.to_ascii_uppercase();
        match name.as_str() {
            "UID" => out.uid = val.as_u64().and_then(|n| u32::try_from(n).ok()),
            "FLAGS" => out.flags = Some(flag_list(val)),
            "INTERNALDATE" => out.internaldate = val.as_bytes().and_then(parse_internaldate),
            "RFC822.SIZE" => out.rfc822_size = val.as_u64(),
            "MODSEQ" => {
                out.modseq = val
                    .as_list()
                    .and_then(|l| l.first())
                    .and_then(Value::as_u64)
            }
            "DIGEST.SHA1" => out.digest_sha1 = val.as_text(),
            n if (n.starts_with("BODY[") || n.starts_with("BINARY[") || n == "RFC822")
                && out.body.is_none() =>
            {
                // NIL bodies (e.g. an expunged message) stay None.
                out.body = val.as_bytes().map(<[u8]>::to_vec);
            }
            _ => out.other.push((name, val.clone())),
        }
    }
    Some(out)
}

/// `* ACL mailbox id rights id rights ...` into (identifier, rights) pairs.
pub fn acl_entries(values: &[Value]) -> Option<Vec<(String, String)>> {
    let [word, _mailbox, rest @ ..] = values else {
        return None;
    };
    if !word.is_atom("ACL") {
        return None;
    }
    Some(
        rest.chunks(2)
            .filter_map(|c| match c {
                [id, rights] => Some((id.as_text()?, rights.as_text()?)),
                _ => None,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse_response;
    use super::*;

    fn data(raw: &[u8]) -> Vec<Value> {
        match parse_response(raw).unwrap() {
            Response::Data(v) => v,
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn list_entries() {
        let e = list_entry(&data(b"* LIST (\\HasChildren) \".\" INBOX"), "LIST").unwrap();
        assert_eq!(e.flags, vec!["\\HasChildren"]);
        assert_eq!(e.delimiter, Some('.'));
        assert_eq!(e.name, "INBOX");
        let e = list_entry(&data(b"* LSUB () \"/\" \"a b\""), "LSUB").unwrap();
        assert_eq!(e.name, "a b");
        assert!(list_entry(&data(b"* LSUB () \"/\" x"), "LIST").is_none());
    }

    // The untagged part of a real Cyrus 3.6.1 SELECT answer.
    #[test]
    fn select_from_cyrus() {
        let lines: &[&[u8]] = &[
            b"* 4 EXISTS",
            b"* 4 RECENT",
            b"* FLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $Forwarded)",
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $Forwarded \\*)] Ok",
            b"* OK [UNSEEN 2] Ok",
            b"* OK [UIDVALIDITY 1795987218] Ok",
            b"* OK [UIDNEXT 5] Ok",
            b"* OK [HIGHESTMODSEQ 5] Ok",
            b"* OK [MAILBOXID (aptnfh8oet69c2q89lgw5i1j)] Ok",
            b"* OK [URLMECH INTERNAL] Ok",
            b"* OK [ANNOTATIONS 65536] Ok",
        ];
        let rs: Vec<Response> = lines.iter().map(|l| parse_response(l).unwrap()).collect();
        let i = select_info(&rs);
        assert_eq!(
            (i.exists, i.recent, i.uidvalidity, i.uidnext),
            (4, 4, 1795987218, 5)
        );
        assert_eq!(i.highestmodseq, 5);
        assert_eq!(i.flags.len(), 6);
        assert_eq!(i.permanent_flags.last().map(String::as_str), Some("\\*"));
        assert_eq!(i.mailboxid.as_deref(), Some("aptnfh8oet69c2q89lgw5i1j"));
    }

    #[test]
    fn fetch_items() {
        let v = data(b"* 2 FETCH (UID 7 MODSEQ (12) FLAGS (\\Seen Work) INTERNALDATE \"29-Nov-2026 21:20:21 +0000\" RFC822.SIZE 37 DIGEST.SHA1 8672562f4b3be5970e1d2a214a58a8b769555589 ANNOTATION (/comment (value.priv NIL)) BODY[] {3}\r\nabc)");
        let f = fetch_item(&v).unwrap();
        assert_eq!(f.seq, 2);
        assert_eq!(f.uid, Some(7));
        assert_eq!(f.modseq, Some(12));
        assert_eq!(
            f.flags,
            Some(vec!["\\Seen".to_string(), "Work".to_string()])
        );
        assert_eq!(f.internaldate.map(|d| d.1), Some(0));
        assert_eq!(f.rfc822_size, Some(37));
        assert_eq!(f.body.as_deref(), Some(&b"abc"[..]));
        assert_eq!(
            f.digest_sha1.as_deref(),
            Some("8672562f4b3be5970e1d2a214a58a8b769555589")
        );
        assert_eq!(f.other.len(), 1);
        assert_eq!(f.other[0].0, "ANNOTATION");
    }

    #[test]
    fn acl() {
        let v = data(b"* ACL INBOX alice lrswipkxtecdan postman p");
        assert_eq!(
            acl_entries(&v).unwrap(),
            vec![
                ("alice".to_string(), "lrswipkxtecdan".to_string()),
                ("postman".to_string(), "p".to_string())
            ]
        );
    }
}
