//! Cyrus's "flat" database format (`lib/cyrusdb_flat.c`), the default backend
//! of the per-user subscriptions file (`user/.../<userid>.sub` or `sub.db`).
//!
//! One record per line: encoded key, TAB, encoded value, LF. The encoding
//! escapes NUL, TAB, CR and LF as 0xFF followed by (0x80 | byte), and 0xFF
//! itself as 0xFF 0xFF. Lines are kept sorted by the encoded key in Cyrus's
//! "mbox" collation (`convert_to_compare` in `lib/bsearch.c`), which Cyrus
//! relies on for its binary search, so [`write_flat`] sorts the same way.
//! What the keys mean (`N` + dbname with `INBOX`, the `0x1F VER 0x1F` version
//! record) is described in `doc/cyrus-files.md`, "subscriptions (flat)".
#![forbid(unsafe_code)]

use std::cmp::Ordering;

use super::ParseError;
use super::twoskip::Records;

/// The escape byte (an invalid UTF-8 byte, so rare in real keys).
const ESCAPE: u8 = 0xff;

fn decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut it = b.iter();
    while let Some(&c) = it.next() {
        if c == ESCAPE {
            // Like Cyrus: a lone trailing escape is dropped; any other escaped
            // byte has its high bit cleared.
            match it.next() {
                Some(&ESCAPE) => out.push(ESCAPE),
                Some(&e) => out.push(e & 0x7f),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn encode(b: &[u8], out: &mut Vec<u8>) {
    for &c in b {
        match c {
            0 | b'\t' | b'\r' | b'\n' => out.extend_from_slice(&[ESCAPE, 0x80 | c]),
            ESCAPE => out.extend_from_slice(&[ESCAPE, ESCAPE]),
            _ => out.push(c),
        }
    }
}

/// Parse a whole flat file into (key, value) pairs in file order.
pub fn parse_flat(buf: &[u8]) -> Result<Records, ParseError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let Some(lf) = rest.iter().position(|&c| c == b'\n') else {
            return Err(ParseError::invalid(
                "flat db",
                pos as u64,
                "last line has no LF",
            ));
        };
        let line = &rest[..lf];
        if let Some(nul) = line.iter().position(|&c| c == 0) {
            return Err(ParseError::invalid(
                "flat db",
                (pos + nul) as u64,
                "raw NUL byte",
            ));
        }
        let Some(tab) = line.iter().position(|&c| c == b'\t') else {
            return Err(ParseError::invalid(
                "flat db",
                pos as u64,
                "line without TAB",
            ));
        };
        out.push((decode(&line[..tab]), decode(&line[tab + 1..])));
        pos += lf + 1;
    }
    Ok(out)
}

/// `convert_to_compare`: TAB and LF lowest, then `.`, then 0x01..0x08 moved
/// up by two; every other byte is itself.
fn collate_byte(c: u8) -> u8 {
    match c {
        b'\t' | b'\n' => 1,
        b'.' => 2,
        1..=8 => c + 2,
        _ => c,
    }
}

/// Cyrus's "mbox" order of two encoded keys (each followed by TAB in the file).
pub fn compare_mbox(a: &[u8], b: &[u8]) -> Ordering {
    let a = a.iter().map(|&c| collate_byte(c)).chain(std::iter::once(1));
    let b = b.iter().map(|&c| collate_byte(c)).chain(std::iter::once(1));
    a.cmp(b)
}

/// The file Cyrus's flat backend would hold for these records: encoded,
/// sorted by encoded key in mbox order. Keys should be unique; duplicates
/// are kept in input order.
pub fn write_flat(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut lines: Vec<(Vec<u8>, Vec<u8>)> = records
        .iter()
        .map(|(k, v)| {
            let mut ek = Vec::with_capacity(k.len());
            encode(k, &mut ek);
            let mut ev = Vec::with_capacity(v.len());
            encode(v, &mut ev);
            (ek, ev)
        })
        .collect();
    lines.sort_by(|x, y| compare_mbox(&x.0, &y.0));
    let mut out = Vec::new();
    for (k, v) in lines {
        out.extend_from_slice(&k);
        out.push(b'\t');
        out.extend_from_slice(&v);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (k.to_vec(), v.to_vec())
    }

    #[test]
    fn escapes_round_trip() {
        let recs = vec![kv(b"a\tb", b"x\ny\r\0"), kv(b"c\xffd", b"\xff")];
        let file = write_flat(&recs);
        assert_eq!(
            file,
            b"a\xff\x89b\tx\xff\x8ay\xff\x8d\xff\x80\nc\xff\xffd\t\xff\xff\n"
        );
        assert_eq!(parse_flat(&file).unwrap(), recs);
    }

    #[test]
    fn mbox_order() {
        let keys: Vec<&[u8]> = vec![
            b"NINBOX\x1fArchive-old",
            b"NINBOX\x1fArchive",
            b"NINBOX\x1fArchive\x1fsub",
            b"NINBOX\x1fArchive.2024",
            b"N-dash",
            b"N.dot",
            b"Nctl\x01",
            b"NUPPER",
        ];
        let recs: Vec<_> = keys.iter().map(|k| kv(k, b"")).collect();
        let out: Vec<Vec<u8>> = parse_flat(&write_flat(&recs))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let want: Vec<&[u8]> = vec![
            b"N.dot",
            b"N-dash",
            b"NINBOX\x1fArchive",
            b"NINBOX\x1fArchive.2024",
            b"NINBOX\x1fArchive\x1fsub",
            b"NINBOX\x1fArchive-old",
            b"NUPPER",
            b"Nctl\x01",
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn malformed_files() {
        assert!(parse_flat(b"").unwrap().is_empty());
        assert!(parse_flat(b"a\tb").is_err());
        assert!(parse_flat(b"ab\n").is_err());
        assert!(parse_flat(b"a\0\tb\n").is_err());
        // Cyrus's lenient decoding: lone trailing escape dropped.
        assert_eq!(parse_flat(b"a\xff\t\n").unwrap(), vec![kv(b"a", b"")]);
    }
}
