//! The synthetic `mailbox_annotations` file, byte for byte as `backupcyrusd` builds it:
//! a folder's mailbox-level annotations as JSON, printed the way jansson's
//! `json_dumps(..., JSON_INDENT(2))` prints an array of `[entry, userid, value]`
//! string triples. See doc/protocol.md, 1.5.
//!
//! Reading the annotations (the global `annotations.db`, in key order, skipping
//! tombstones and empty values, replacing the owner token with the owner's userid) is
//! the spool's job; this module only formats.
#![forbid(unsafe_code)]

/// One mailbox annotation as read from `annotations.db`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Annotation<'a> {
    /// Entry name, e.g. `/comment`.
    pub entry: &'a [u8],
    /// `""` for shared annotations, else the userid (the owner's, not `[.OwNeR.]`).
    pub userid: &'a [u8],
    /// The value (non-empty, not a tombstone).
    pub value: &'a [u8],
}

/// The JSON bytes, or None when no entry is left (upstream then has no file at all).
///
/// Like upstream: a value is cut at its first NUL (it is used as a C string); an entry
/// with any field that is not valid UTF-8 is dropped (jansson refuses to pack it).
pub fn mailbox_annotations_json(entries: &[Annotation<'_>]) -> Option<Vec<u8>> {
    let cut = |b: &[u8]| -> Vec<u8> { super::token::c_str(b).to_vec() };
    let mut out = Vec::new();
    let mut n = 0usize;
    for a in entries {
        let fields = [cut(a.entry), cut(a.userid), cut(a.value)];
        if fields.iter().any(|f| std::str::from_utf8(f).is_err()) {
            continue;
        }
        out.extend_from_slice(if n == 0 { b"[\n  [" } else { b",\n  [" });
        for (i, f) in fields.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"\n    " } else { b",\n    " });
            json_string(f, &mut out);
        }
        out.extend_from_slice(b"\n  ]");
        n += 1;
    }
    if n == 0 {
        return None;
    }
    out.extend_from_slice(b"\n]");
    Some(out)
}

/// A JSON string as jansson writes it without `JSON_ESCAPE_SLASH`/`JSON_ENSURE_ASCII`.
fn json_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 => out.extend_from_slice(format!("\\u{:04X}", c).as_bytes()),
            c => out.push(c),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a<'a>(entry: &'a str, userid: &'a str, value: &'a [u8]) -> Annotation<'a> {
        Annotation {
            entry: entry.as_bytes(),
            userid: userid.as_bytes(),
            value,
        }
    }

    #[test]
    fn matches_the_transcript_fixture() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/transcripts/alice-work-stuff-annotations.json"
        );
        let want = std::fs::read(path).unwrap();
        let got = mailbox_annotations_json(&[
            a("/comment", "", b"project notes"),
            a("/comment", "alice", b"mine"),
        ])
        .unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            String::from_utf8(want).unwrap()
        );
    }

    #[test]
    fn escapes_like_jansson() {
        let got = mailbox_annotations_json(&[a("/x", "", b"a\"b\\c/d\x01\te\xc3\xa9")]).unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "[\n  [\n    \"/x\",\n    \"\",\n    \"a\\\"b\\\\c/d\\u0001\\te\u{e9}\"\n  ]\n]"
        );
    }

    #[test]
    fn nul_cuts_invalid_utf8_drops_nothing_left_is_none() {
        let got = mailbox_annotations_json(&[a("/x", "", b"ab\0cd")]).unwrap();
        assert!(got.ends_with(b"\"ab\"\n  ]\n]"));
        assert_eq!(mailbox_annotations_json(&[a("/x", "", b"\xff")]), None);
        assert_eq!(mailbox_annotations_json(&[]), None);
        let got = mailbox_annotations_json(&[a("/x", "", b"\xff"), a("/y", "", b"ok")]).unwrap();
        assert!(got.starts_with(b"[\n  [\n    \"/y\""));
    }
}
