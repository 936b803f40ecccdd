//! Cyrus's DList text syntax, as stored in `cyrus.header` and in `mailboxes.db` values.
//!
//! This module owns the token grammar only: kvlists `%(K v K v ...)`, lists
//! `( ... )`, atoms, `"quoted"` strings, `NIL` and literals `{N}` / `{N+}` CRLF
//! bytes. What the keys mean belongs to `header` and `mboxlist`.
//!
//! The reader follows Cyrus 3.6's `dlist_parsesax` (`imap/dlist.c`), which is
//! what both `mailbox_read_header` and `mboxlist_parse_entry` use: single
//! spaces between items, an atom runs to the next space with any trailing `)`
//! taken off, a backslash in a quoted string quotes the next byte, and the
//! whole input must be consumed. File literals `%{part guid size}` only occur
//! in the sync protocol and are rejected here.
//!
//! The printer follows `dlist_print` + `prot_printastring` (`lib/prot.c`,
//! `lib/imparse.c`) byte for byte, so a value we print is what Cyrus would
//! write for the same content. See `doc/cyrus-files.md`, section "cyrus.header".
#![forbid(unsafe_code)]

use super::ParseError;

/// Deepest nesting we accept. Cyrus writes at most 3 levels (`%(H (%(...)))`).
pub const MAX_DEPTH: usize = 64;

/// Strings of this length or more are never printed as atoms or quoted strings
/// (`MAXQSTRING` in `lib/prot.c`, the 1024 in `imparse_isnatom`).
const MAX_QSTRING: usize = 1024;

/// One parsed DList value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dlist {
    /// An atom, quoted string or literal: Cyrus does not keep the distinction.
    Atom(Vec<u8>),
    /// The bare word `NIL` (a missing value).
    Nil,
    /// `( item item ... )`.
    List(Vec<Dlist>),
    /// `%( key value key value ... )`, in file order (keys may repeat).
    KvList(Vec<(String, Dlist)>),
}

impl Dlist {
    /// The value of `key` in a kvlist. If the key repeats, the last one wins,
    /// as in Cyrus's parse callbacks, which overwrite earlier values.
    pub fn get(&self, key: &str) -> Option<&Dlist> {
        match self {
            Dlist::KvList(items) => items.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The bytes of an atom.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Dlist::Atom(b) => Some(b),
            _ => None,
        }
    }

    /// The atom as UTF-8 text.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The atom as an unsigned decimal number (digits only, no sign, no overflow).
    pub fn as_u64(&self) -> Option<u64> {
        parse_decimal(self.as_bytes()?)
    }

    /// The items of a list.
    pub fn as_list(&self) -> Option<&[Dlist]> {
        match self {
            Dlist::List(items) => Some(items),
            _ => None,
        }
    }

    /// The pairs of a kvlist.
    pub fn as_kvlist(&self) -> Option<&[(String, Dlist)]> {
        match self {
            Dlist::KvList(items) => Some(items),
            _ => None,
        }
    }

    /// True for `NIL`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Dlist::Nil)
    }

    /// An atom holding `s`.
    pub fn atom(s: impl AsRef<[u8]>) -> Dlist {
        Dlist::Atom(s.as_ref().to_vec())
    }
}

/// Unsigned decimal digits to a number; `None` for empty, non-digits or overflow.
pub(crate) fn parse_decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u64, |n, &c| {
        if c.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        } else {
            None
        }
    })
}

/// Parse one complete DList value (no key), e.g. a whole `%(...)` header line.
pub fn parse_dlist(buf: &[u8]) -> Result<Dlist, ParseError> {
    let mut p = Parser {
        buf,
        pos: 0,
        line_mode: false,
    };
    let v = p.value(0)?;
    if p.pos != buf.len() {
        return Err(p.err("trailing bytes after the value"));
    }
    Ok(v)
}

/// Parse one value at the start of `buf` that ends a line (the `cyrus.header`
/// case): atoms also stop at LF, and the number of bytes used is returned so the
/// caller can check the LF that follows. Literals may contain LF.
pub fn parse_dlist_line(buf: &[u8]) -> Result<(Dlist, usize), ParseError> {
    let mut p = Parser {
        buf,
        pos: 0,
        line_mode: true,
    };
    let v = p.value(0)?;
    Ok((v, p.pos))
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Atoms end at LF as well as at a space (see [`parse_dlist_line`]).
    line_mode: bool,
}

impl Parser<'_> {
    fn err(&self, msg: &str) -> ParseError {
        ParseError::invalid("dlist", self.pos as u64, msg)
    }

    fn peek(&self) -> Result<u8, ParseError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or_else(|| ParseError::truncated("dlist", self.pos as u64, 1, 0))
    }

    fn value(&mut self, depth: usize) -> Result<Dlist, ParseError> {
        if depth >= MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.peek()? {
            b'(' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b')' {
                    items.push(self.value(depth + 1)?);
                    if self.separator()? {
                        break;
                    }
                }
                self.pos += 1;
                Ok(Dlist::List(items))
            }
            b'%' => {
                self.pos += 1;
                if self.peek()? != b'(' {
                    return Err(
                        self.err("'%' not followed by '(' (file literals are not supported)")
                    );
                }
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b')' {
                    let key = match self.item()? {
                        Some(k) => {
                            String::from_utf8(k).map_err(|_| self.err("key is not UTF-8"))?
                        }
                        None => return Err(self.err("NIL used as a key")),
                    };
                    if self.peek()? != b' ' {
                        return Err(self.err("expected a space after a key"));
                    }
                    self.pos += 1;
                    let v = self.value(depth + 1)?;
                    items.push((key, v));
                    if self.separator()? {
                        break;
                    }
                }
                self.pos += 1;
                Ok(Dlist::KvList(items))
            }
            _ => Ok(match self.item()? {
                Some(b) => Dlist::Atom(b),
                None => Dlist::Nil,
            }),
        }
    }

    /// After an item inside a list: `)` ends it (returns true), one space continues.
    fn separator(&mut self) -> Result<bool, ParseError> {
        match self.peek()? {
            b')' => Ok(true),
            b' ' => {
                self.pos += 1;
                self.peek()?;
                Ok(false)
            }
            _ => Err(self.err("expected ' ' or ')' after an item")),
        }
    }

    /// A string item; `None` for the bare atom `NIL`.
    fn item(&mut self) -> Result<Option<Vec<u8>>, ParseError> {
        match self.peek()? {
            b'"' => self.quoted().map(Some),
            b'{' => self.literal().map(Some),
            _ => {
                let rest = &self.buf[self.pos..];
                let stop = |c: u8| c == b' ' || (self.line_mode && c == b'\n');
                let mut end = rest.iter().position(|&c| stop(c)).unwrap_or(rest.len());
                // Cyrus takes trailing ')' off an atom: they close enclosing lists.
                while end > 0 && rest[end - 1] == b')' {
                    end -= 1;
                }
                if end == 0 {
                    return Err(self.err("empty atom"));
                }
                let atom = &rest[..end];
                self.pos += end;
                if atom == b"NIL" {
                    Ok(None)
                } else {
                    Ok(Some(atom.to_vec()))
                }
            }
        }
    }

    fn quoted(&mut self) -> Result<Vec<u8>, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.buf.get(self.pos) {
            self.pos += 1;
            match c {
                b'"' => return Ok(out),
                b'\\' => match self.buf.get(self.pos) {
                    Some(&q) => {
                        out.push(q);
                        self.pos += 1;
                    }
                    None => break,
                },
                _ => out.push(c),
            }
        }
        Err(ParseError::invalid(
            "dlist",
            start as u64,
            "unterminated quoted string",
        ))
    }

    fn literal(&mut self) -> Result<Vec<u8>, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut len: usize = 0;
        while let Some(&c) = self.buf.get(self.pos) {
            if !c.is_ascii_digit() {
                break;
            }
            len = len
                .checked_mul(10)
                .and_then(|n| n.checked_add(usize::from(c - b'0')))
                .ok_or_else(|| self.err("literal length overflows"))?;
            self.pos += 1;
        }
        if self.buf.get(self.pos) == Some(&b'+') {
            self.pos += 1;
        }
        if self.buf.get(self.pos..self.pos.saturating_add(3)) != Some(b"}\r\n".as_slice()) {
            return Err(ParseError::invalid(
                "dlist",
                start as u64,
                "malformed literal header",
            ));
        }
        self.pos += 3;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let v = self.buf[self.pos..end].to_vec();
                self.pos = end;
                Ok(v)
            }
            None => Err(ParseError::truncated(
                "dlist literal",
                self.pos as u64,
                len as u64,
                (self.buf.len() - self.pos) as u64,
            )),
        }
    }
}

/// Print a value exactly as Cyrus's `dlist_printbuf(dl, 0, ...)` does.
pub fn print_dlist(d: &Dlist) -> Vec<u8> {
    let mut out = Vec::new();
    print_into(d, &mut out);
    out
}

fn print_into(d: &Dlist, out: &mut Vec<u8>) {
    match d {
        Dlist::Nil => out.extend_from_slice(b"NIL"),
        Dlist::Atom(b) => print_astring(b, out),
        Dlist::List(items) => {
            out.push(b'(');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                print_into(item, out);
            }
            out.push(b')');
        }
        Dlist::KvList(items) => {
            out.extend_from_slice(b"%(");
            for (i, (k, v)) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                print_astring(k.as_bytes(), out);
                out.push(b' ');
                print_into(v, out);
            }
            out.push(b')');
        }
    }
}

/// `imparse_isatom`: printable ASCII without IMAP specials, shorter than 1024.
/// Note that 0x1F itself passes (the test is `< 0x1f`).
fn is_atom(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() < MAX_QSTRING
        && b.iter().all(|&c| {
            !(c & 0x80 != 0
                || c < 0x1f
                || c == 0x7f
                || matches!(c, b' ' | b'{' | b'(' | b')' | b'"' | b'%' | b'*' | b'\\'))
        })
}

/// `isQCHAR` from `lib/prot.c`, plus NUL (which a C string cannot carry).
fn is_qchar(c: u8) -> bool {
    !(c & 0x80 != 0 || matches!(c, 0 | b'\r' | b'\n' | b'"' | b'%' | b'\\'))
}

/// `prot_printastring`: atom if possible, else quoted, else a literal (`{N+}`, the
/// non-synchronising form; the replication protocol's writer uses it too).
pub fn print_astring(b: &[u8], out: &mut Vec<u8>) {
    if b.is_empty() {
        out.extend_from_slice(b"\"\"");
    } else if is_atom(b) && b != b"NIL" {
        out.extend_from_slice(b);
    } else if b.len() < MAX_QSTRING && b.iter().all(|&c| is_qchar(c)) {
        out.push(b'"');
        out.extend_from_slice(b);
        out.push(b'"');
    } else {
        // Cyrus prints into a buffer stream, which marks literals non-synchronising
        // (`{N+}`); verified on a 3.6.1 mailboxes.db and cyrus.header.
        out.extend_from_slice(format!("{{{}+}}\r\n", b.len()).as_bytes());
        out.extend_from_slice(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(s: &[u8]) -> Vec<u8> {
        print_dlist(&parse_dlist(s).unwrap())
    }

    #[test]
    fn parses_a_mailboxes_db_value() {
        let v = parse_dlist(b"%(T e N user\x1falice P default V 17 A %(alice lrs) H ())").unwrap();
        assert_eq!(v.get("T").and_then(Dlist::as_str), Some("e"));
        assert_eq!(
            v.get("N").and_then(Dlist::as_bytes),
            Some(&b"user\x1falice"[..])
        );
        assert_eq!(v.get("V").and_then(Dlist::as_u64), Some(17));
        assert_eq!(v.get("H").and_then(Dlist::as_list).map(<[_]>::len), Some(0));
        let acl = v.get("A").and_then(Dlist::as_kvlist).unwrap();
        assert_eq!(acl, &[("alice".to_string(), Dlist::atom("lrs"))]);
    }

    #[test]
    fn byte_identical_round_trips() {
        for s in [
            &b"%(T e N user.alice I 5a1b A %(alice lrswipkxtecdan))"[..],
            b"%(N \"shared\x1fTeam Folder\" H (%(N a M 1) %(N b)))",
            b"%(A %(anyone lrs {7+}\r\nj\xc3\xbcrgen lr))",
            b"(a NIL \"NIL\" \"\" b)",
            b"%(U ($Label1 Work NIL NIL $Junk))",
            b"()",
            b"%()",
        ] {
            assert_eq!(round(s), s, "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn printer_picks_atom_quoted_or_literal() {
        let p = |b: &[u8]| print_dlist(&Dlist::atom(b));
        assert_eq!(p(b"abc"), b"abc");
        assert_eq!(p(b"a\x1fb"), b"a\x1fb"); // 0x1F is still an atom
        assert_eq!(p(b"a\x1db"), b"\"a\x1db\"");
        assert_eq!(p(b"a b"), b"\"a b\"");
        assert_eq!(p(b"NIL"), b"\"NIL\"");
        assert_eq!(p(b""), b"\"\"");
        assert_eq!(p(b"a\"b"), b"{3+}\r\na\"b");
        assert_eq!(p(b"a\\b"), b"{3+}\r\na\\b");
        assert_eq!(p(b"\xff"), b"{1+}\r\n\xff");
        assert_eq!(p(&[b'x'; 1023]), vec![b'x'; 1023]);
        let long = p(&[b'x'; 1024]);
        assert!(long.starts_with(b"{1024+}\r\n"));
        let q = p(&[b' '; 1023]);
        assert_eq!(q.len(), 1025);
    }

    #[test]
    fn quoted_and_literal_forms_parse() {
        assert_eq!(
            parse_dlist(b"\"a\\\"b\\\\\"").unwrap(),
            Dlist::atom(b"a\"b\\")
        );
        assert_eq!(parse_dlist(b"{3}\r\nabc").unwrap(), Dlist::atom(b"abc"));
        assert_eq!(parse_dlist(b"{0+}\r\n").unwrap(), Dlist::atom(b""));
        assert_eq!(parse_dlist(b"NIL").unwrap(), Dlist::Nil);
        assert_eq!(parse_dlist(b"(a))").unwrap_err().offset, 3);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        for s in [
            &b""[..],
            b"(",
            b"(a",
            b"(a ",
            b"(a  b)",
            b"%(a)",
            b"%(NIL x)",
            b"%{p g 1}",
            b"%x",
            b"\"abc",
            b"{5}\r\nabc",
            b"{99999999999999999999999}\r\n",
            b"{3}abc",
            b"(a)b",
            b"( )",
            b"%(\xff x)",
        ] {
            assert!(parse_dlist(s).is_err(), "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn depth_is_bounded() {
        let deep = [vec![b'('; 100], vec![b')'; 100]].concat();
        assert!(parse_dlist(&deep).is_err());
        let ok = [vec![b'('; 10], vec![b')'; 10]].concat();
        assert!(parse_dlist(&ok).is_ok());
    }

    #[test]
    fn decimal_rules() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b""), None);
    }
}
