//! `cyrus.header`: the per-mailbox header file (magic + name, uniqueid, ACL, user flags).
//!
//! Cyrus 3.6 writes the magic followed by one DList kvlist line
//! (`mailbox_commit_header` in `imap/mailbox.c`); 3.4 and earlier wrote three
//! text lines, which 3.6 still reads (`mailbox_read_header`); 3.13 adds a `J`
//! (JMAP id) field after `I`, always (`J NIL` when there is none). This module
//! parses all three and writes the DList forms byte-identically to Cyrus, for
//! restores. It does not check the header against `cyrus.index`'s
//! `header_file_crc`: the caller does that with [`crate::cyrus::crc32`] on the
//! same bytes. Layout and examples: `doc/cyrus-files.md`, "cyrus.header".
#![forbid(unsafe_code)]

use super::dlist::{Dlist, parse_dlist_line, print_dlist};
use super::mboxlist::split_acl;
use super::{ParseError, ParseErrorKind};

/// The fixed first 115 bytes (`MAILBOX_HEADER_MAGIC` without its NUL).
pub const HEADER_MAGIC: &[u8; 115] = b"\xa1\x02\x8b\x0dCyrus mailbox header\n\
\"The best thing about this system was that it had lots of goals.\"\n\
\t--Jim Morris on Andrew\n";

/// `MAX_USER_FLAGS` in `imap/mailbox.h`.
pub const MAX_USER_FLAGS: usize = 128;

/// Which of the two layouts the file had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum HeaderFormat {
    /// One DList line (Cyrus 3.6 to 3.12).
    Dlist36,
    /// One DList line with a `J` field (Cyrus 3.13 on).
    Dlist313,
    /// quotaroot TAB uniqueid / flags / ACL lines (Cyrus 3.4 and earlier).
    Legacy,
}

/// The content of a `cyrus.header`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MailboxHeader {
    /// mbtype string (`T`); absent in the legacy format.
    pub mbtype: Option<String>,
    /// Internal mailbox name (`N`); absent in the legacy format, and written
    /// as `NIL` by Cyrus when it converts such a header (verified, 3.6.1).
    pub name: Option<String>,
    /// Unique id (`I`).
    pub uniqueid: Option<String>,
    /// JMAP id (`J`, Cyrus 3.13 on; `NIL` reads as None).
    pub jmapid: Option<String>,
    /// Quota root (`Q`), if the mailbox has one.
    pub quotaroot: Option<String>,
    /// Identifier/rights pairs (`A`), in ACL order.
    pub acl: Vec<(String, String)>,
    /// User flag names by slot; `None` for an unused slot. No trailing `None`s.
    pub user_flags: Vec<Option<String>>,
    /// The layout the file was in.
    pub format: HeaderFormat,
}

const WHAT: &str = "cyrus.header";

fn invalid(offset: usize, msg: impl Into<String>) -> ParseError {
    ParseError::invalid(WHAT, offset as u64, msg)
}

fn utf8(b: &[u8], offset: usize, field: &str) -> Result<String, ParseError> {
    String::from_utf8(b.to_vec()).map_err(|_| invalid(offset, format!("{field} is not UTF-8")))
}

/// Parse a `cyrus.header` file: magic first, then either layout.
pub fn parse_header(buf: &[u8]) -> Result<MailboxHeader, ParseError> {
    let magic = HEADER_MAGIC.len();
    if buf.len() < magic {
        if !HEADER_MAGIC.starts_with(buf) {
            return Err(ParseError::new(WHAT, 0, ParseErrorKind::BadMagic));
        }
        return Err(ParseError::truncated(
            WHAT,
            0,
            magic as u64,
            buf.len() as u64,
        ));
    }
    if &buf[..magic] != HEADER_MAGIC {
        return Err(ParseError::new(WHAT, 0, ParseErrorKind::BadMagic));
    }
    if buf.get(magic) == Some(&b'%') {
        parse_dlist_format(buf, magic)
    } else {
        parse_legacy_format(buf, magic)
    }
}

fn parse_dlist_format(buf: &[u8], start: usize) -> Result<MailboxHeader, ParseError> {
    let (d, used) = parse_dlist_line(&buf[start..]).map_err(|mut e| {
        e.what = format!("{WHAT}: {}", e.what);
        e.offset += start as u64;
        e
    })?;
    let end = start + used;
    if buf.get(end) != Some(&b'\n') {
        return Err(invalid(end, "the DList line does not end with LF"));
    }
    if d.as_kvlist().is_none() {
        return Err(invalid(start, "the DList line is not a kvlist"));
    }
    let string = |key: &str| -> Result<Option<String>, ParseError> {
        match d.get(key) {
            None | Some(Dlist::Nil) => Ok(None),
            Some(Dlist::Atom(b)) => utf8(b, start, key).map(Some),
            Some(_) => Err(invalid(start, format!("field {key} is not a string"))),
        }
    };
    let acl = match d.get("A") {
        None => Vec::new(),
        Some(Dlist::KvList(items)) => items
            .iter()
            .map(|(k, v)| match v {
                Dlist::Atom(b) => Ok((k.clone(), utf8(b, start, "ACL rights")?)),
                Dlist::Nil => Ok((k.clone(), String::new())),
                _ => Err(invalid(start, "ACL rights are not a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid(start, "field A (ACL) is not a kvlist")),
    };
    let mut user_flags = match d.get("U") {
        None => Vec::new(),
        Some(Dlist::List(items)) => {
            if items.len() > MAX_USER_FLAGS {
                return Err(invalid(
                    start,
                    format!("{} user flags (at most {MAX_USER_FLAGS})", items.len()),
                ));
            }
            items
                .iter()
                .map(|f| match f {
                    Dlist::Nil => Ok(None),
                    Dlist::Atom(b) => utf8(b, start, "user flag").map(Some),
                    _ => Err(invalid(start, "a user flag is not a string")),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => return Err(invalid(start, "field U (user flags) is not a list")),
    };
    trim_flags(&mut user_flags);
    Ok(MailboxHeader {
        mbtype: string("T")?,
        name: string("N")?,
        uniqueid: string("I")?,
        jmapid: string("J")?,
        quotaroot: string("Q")?,
        acl,
        user_flags,
        format: if d.get("J").is_some() {
            HeaderFormat::Dlist313
        } else {
            HeaderFormat::Dlist36
        },
    })
}

fn trim_flags(flags: &mut Vec<Option<String>>) {
    while flags.last().is_some_and(Option::is_none) {
        flags.pop();
    }
}

/// The next line from `pos`: (content, offset after its LF).
fn line<'a>(buf: &'a [u8], pos: usize, which: &str) -> Result<(&'a [u8], usize), ParseError> {
    let rest = buf.get(pos..).unwrap_or_default();
    match rest.iter().position(|&c| c == b'\n') {
        Some(n) => Ok((&rest[..n], pos + n + 1)),
        None => Err(invalid(pos, format!("{which} line has no LF"))),
    }
}

fn parse_legacy_format(buf: &[u8], start: usize) -> Result<MailboxHeader, ParseError> {
    let (l1, p2) = line(buf, start, "quotaroot/uniqueid")?;
    let (quotaroot, uniqueid) = match l1.iter().position(|&c| c == b'\t') {
        Some(tab) => {
            let id = &l1[tab + 1..];
            let id = &id[..id.iter().position(|&c| c == b'\t').unwrap_or(id.len())];
            if id.is_empty() {
                return Err(invalid(start + tab + 1, "empty uniqueid after TAB"));
            }
            (&l1[..tab], Some(utf8(id, start, "uniqueid")?))
        }
        // Very old headers: no TAB, no uniqueid (Cyrus logs "needs reconstruct").
        None => (l1, None),
    };
    let quotaroot = if quotaroot.is_empty() {
        None
    } else {
        Some(utf8(quotaroot, start, "quotaroot")?)
    };
    let (l2, p3) = line(buf, p2, "user flags")?;
    let mut user_flags = l2
        .split(|&c| c == b' ')
        .take(MAX_USER_FLAGS)
        .map(|f| {
            if f.is_empty() {
                Ok(None)
            } else {
                utf8(f, p2, "user flag").map(Some)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    trim_flags(&mut user_flags);
    let (l3, _) = line(buf, p3, "ACL")?;
    let acl = split_acl(&utf8(l3, p3, "ACL")?);
    Ok(MailboxHeader {
        mbtype: None,
        name: None,
        uniqueid,
        jmapid: None,
        quotaroot,
        acl,
        user_flags,
        format: HeaderFormat::Legacy,
    })
}

/// The bytes Cyrus writes for this content: magic, the kvlist
/// `T N I [J] [Q] A [U]`, LF (`J` when the format is [`HeaderFormat::Dlist313`]). A missing mbtype is written as `e` (Cyrus's
/// default type 0); a missing name or uniqueid as `NIL`. `A` is always
/// written (Cyrus omits it only when it has no ACL string at all).
pub fn write_header(h: &MailboxHeader) -> Vec<u8> {
    let opt = |s: &Option<String>| s.as_ref().map_or(Dlist::Nil, Dlist::atom);
    let mut kv = vec![
        (
            "T".to_string(),
            Dlist::atom(h.mbtype.as_deref().unwrap_or("e")),
        ),
        ("N".to_string(), opt(&h.name)),
        ("I".to_string(), opt(&h.uniqueid)),
    ];
    if h.format == HeaderFormat::Dlist313 {
        kv.push(("J".to_string(), opt(&h.jmapid)));
    }
    if let Some(q) = &h.quotaroot {
        kv.push(("Q".to_string(), Dlist::atom(q)));
    }
    let acl = h
        .acl
        .iter()
        .map(|(k, v)| (k.clone(), Dlist::atom(v)))
        .collect();
    kv.push(("A".to_string(), Dlist::KvList(acl)));
    let used = h
        .user_flags
        .iter()
        .rposition(Option::is_some)
        .map_or(0, |i| i + 1);
    if used > 0 {
        let flags = h.user_flags[..used].iter().map(opt).collect();
        kv.push(("U".to_string(), Dlist::List(flags)));
    }
    let mut out = HEADER_MAGIC.to_vec();
    out.extend_from_slice(&print_dlist(&Dlist::KvList(kv)));
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_magic(rest: &[u8]) -> Vec<u8> {
        [HEADER_MAGIC.as_slice(), rest].concat()
    }

    #[test]
    fn magic_is_115_bytes() {
        assert_eq!(HEADER_MAGIC.len(), 115);
        assert!(HEADER_MAGIC.ends_with(b"Andrew\n"));
    }

    #[test]
    fn dlist_header_round_trips() {
        let buf = with_magic(
            b"%(T e N user.alice.Sent I a11c Q user.alice A %(alice lrswipkxtecdan anyone 0) \
              U ($Label1 Work NIL NIL $Junk Extra))\n",
        );
        let h = parse_header(&buf).unwrap();
        assert_eq!(h.format, HeaderFormat::Dlist36);
        assert_eq!(h.quotaroot.as_deref(), Some("user.alice"));
        assert_eq!(h.user_flags.len(), 6);
        assert_eq!(h.user_flags[2], None);
        assert_eq!(write_header(&h), buf);
    }

    #[test]
    fn legacy_header_parses() {
        let buf = with_magic(b"user.cassandane\tf4fc\n$A B  C \ncassandane\tlrs\tanyone\tp\t\n");
        let h = parse_header(&buf).unwrap();
        assert_eq!(h.format, HeaderFormat::Legacy);
        assert_eq!(
            (h.quotaroot.as_deref(), h.uniqueid.as_deref()),
            (Some("user.cassandane"), Some("f4fc"))
        );
        let f: Vec<_> = h.user_flags.iter().map(Option::as_deref).collect();
        assert_eq!(f, vec![Some("$A"), Some("B"), None, Some("C")]);
        assert_eq!(h.acl.len(), 2);
        // No quota root, no uniqueid.
        let h = parse_header(&with_magic(b"\n\n\n")).unwrap();
        assert_eq!((h.quotaroot, h.uniqueid, h.acl.len()), (None, None, 0));
        let h = parse_header(&with_magic(b"\tid\n\n\n")).unwrap();
        assert_eq!(h.uniqueid.as_deref(), Some("id"));
    }

    #[test]
    fn damaged_headers_are_errors() {
        let good = with_magic(b"%(T e N a I b A %(x y))\n");
        assert!(parse_header(&good).is_ok());
        for n in 0..good.len() {
            assert!(parse_header(&good[..n]).is_err(), "truncated at {n}");
        }
        let mut bad = good.clone();
        bad[5] ^= 1;
        assert_eq!(
            parse_header(&bad).unwrap_err().kind,
            ParseErrorKind::BadMagic
        );
        for rest in [
            &b"%(T e\n"[..],
            b"%(T e) x\n",
            b"%(A x)\n",
            b"%(U x)\n",
            b"%(U (%(a b)))\n",
            b"q\t\n\n\n",
            b"q\tid\n\n",
        ] {
            assert!(
                parse_header(&with_magic(rest)).is_err(),
                "{}",
                String::from_utf8_lossy(rest)
            );
        }
        let many = format!("%(U ({}))\n", vec!["f"; 129].join(" "));
        assert!(parse_header(&with_magic(many.as_bytes())).is_err());
    }

    #[test]
    fn writer_defaults_match_cyrus() {
        let h = MailboxHeader {
            mbtype: None,
            name: None,
            uniqueid: Some("u".into()),
            jmapid: None,
            quotaroot: None,
            acl: vec![],
            user_flags: vec![None, Some("x".into()), None],
            format: HeaderFormat::Legacy,
        };
        assert_eq!(
            write_header(&h),
            with_magic(b"%(T e N NIL I u A %() U (NIL x))\n")
        );
        // 3.13 writes J always, NIL when there is no JMAP id.
        for line in [
            &b"%(T e N user.a I u J NIL A %())\n"[..],
            b"%(T e N user.a I u J P-F Q user.a A %(a lrs))\n",
        ] {
            let h = parse_header(&with_magic(line)).unwrap();
            assert_eq!(h.format, HeaderFormat::Dlist313);
            assert_eq!(write_header(&h), with_magic(line));
        }
    }
}
