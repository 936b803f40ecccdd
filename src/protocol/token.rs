//! Tokens of a request line, cut exactly the way `backupcyrusd` cuts them, and the two
//! percent-encodings the protocol uses.
//!
//! Upstream reads tokens straight from the socket with Cyrus's IMAP helpers: `getword`
//! (a run of bytes up to C `isspace`, `(`, `)` or `"`) and `getastring` (atom, quoted
//! string or literal), and then looks at the single byte that ended the token. The
//! [`Cursor`] reproduces that over one already-read line, so the service answers odd
//! input (tabs, double spaces, a trailing CR) the way upstream does. See
//! `doc/protocol.md`, "Tokens".
#![forbid(unsafe_code)]

/// What ended a token: the byte upstream's parser returned as `c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// A delimiter byte that was consumed (space, tab, CR, `(`, `)`, `"`, ...).
    Byte(u8),
    /// The newline that ended the line.
    Newline,
    /// End of stream (a last line without newline), or a failed astring (upstream
    /// returns `EOF` for both).
    Eof,
}

impl Term {
    /// Upstream's `c == ' '`, the only terminator that lets a command go on.
    pub fn is_space(self) -> bool {
        self == Term::Byte(b' ')
    }
}

/// Result of reading an astring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AString {
    /// An atom or quoted string (raw, not yet percent-decoded).
    Value(Vec<u8>, Term),
    /// A `{n}` literal: upstream would read `n` raw bytes past the line; we refuse it.
    Literal,
}

/// C's `isspace` in the "C" locale.
pub fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn ends_word(b: u8) -> bool {
    is_c_space(b) || b == b'(' || b == b')' || b == b'"'
}

/// A read position in one request line (without its newline).
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    line: &'a [u8],
    pos: usize,
    terminated: bool,
}

impl<'a> Cursor<'a> {
    /// `terminated` says whether the line ended with a newline (else: end of stream).
    pub fn new(line: &'a [u8], terminated: bool) -> Self {
        Cursor {
            line,
            pos: 0,
            terminated,
        }
    }

    fn end(&self) -> Term {
        if self.terminated {
            Term::Newline
        } else {
            Term::Eof
        }
    }

    fn next_byte(&mut self) -> Option<u8> {
        let b = self.line.get(self.pos).copied()?;
        self.pos += 1;
        Some(b)
    }

    /// Upstream `getword`: bytes up to a delimiter; the delimiter is consumed.
    pub fn word(&mut self) -> (&'a [u8], Term) {
        let start = self.pos;
        loop {
            match self.line.get(self.pos).copied() {
                None => return (&self.line[start..], self.end()),
                Some(b) if ends_word(b) => {
                    let w = &self.line[start..self.pos];
                    self.pos += 1;
                    return (w, Term::Byte(b));
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Upstream `getastring`: an atom, a quoted string (backslash quotes the next byte)
    /// or a literal. A bad first byte, or a quoted string cut by the end of the line,
    /// yields an empty value with [`Term::Eof`], as upstream returns `EOF` then.
    pub fn astring(&mut self) -> AString {
        let Some(first) = self.next_byte() else {
            return AString::Value(Vec::new(), Term::Eof);
        };
        match first {
            b' ' | b'(' | b')' | b'\r' => {
                // upstream pushes the byte back; eatline then skips the rest
                AString::Value(Vec::new(), Term::Eof)
            }
            b'"' => {
                let mut out = Vec::new();
                loop {
                    let Some(mut b) = self.next_byte() else {
                        return AString::Value(out, Term::Eof);
                    };
                    if b == b'\\' {
                        match self.next_byte() {
                            Some(q) => b = q,
                            None => return AString::Value(out, Term::Eof),
                        }
                    } else if b == b'"' {
                        let t = match self.next_byte() {
                            Some(c) => Term::Byte(c),
                            None => self.end(),
                        };
                        return AString::Value(out, t);
                    } else if b == b'\r' {
                        return AString::Value(out, Term::Eof);
                    }
                    out.push(b);
                }
            }
            b'{' => AString::Literal,
            _ => {
                self.pos -= 1;
                let (w, t) = self.word();
                AString::Value(w.to_vec(), t)
            }
        }
    }
}

fn hex_val(b: u8) -> Option<u8> {
    // upstream's table lookup masks the high bit: `unxdigit[c & 0x7f]`
    match b & 0x7f {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode a request token exactly as `backupcyrusd`'s `geturistring` does:
/// `%` followed by at least two more bytes consumes those two bytes; if both are hex
/// digits (high bit ignored) they become one byte, otherwise the `%` stays and the two
/// bytes are dropped. A `%` with fewer than two bytes after it is kept as is.
pub fn decode_request_token(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&v) = raw.get(i) {
        i += 1;
        if v == b'%' && i + 1 < raw.len() {
            let decoded = match (hex_val(raw[i]), hex_val(raw[i + 1])) {
                (Some(h), Some(l)) => (h << 4) | l,
                _ => b'%',
            };
            i += 2;
            out.push(decoded);
        } else {
            out.push(v);
        }
    }
    out
}

/// Percent-encode a request token the way the Perl client (`Cyrus::Backup::uri`) does:
/// everything but `A-Z a-z 0-9 - _ . ,` becomes `%XX` (upper-case hex).
pub fn encode_request_token(raw: &[u8], out: &mut Vec<u8>) {
    for &b in raw {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b',') {
            out.push(b);
        } else {
            push_pct(b, out);
        }
    }
}

fn push_pct(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'%');
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0xf)]);
}

/// Percent-encode a reply token the way `backupcyrusd`'s `puturistring` does: RFC 3986
/// unreserved bytes (`A-Z a-z 0-9 _ ~ . -`) stay, everything else becomes `%XX`.
///
/// Upstream indexes its table with a signed `char`, so on x86 a byte >= 0x80 is
/// undefined behaviour and in practice prints `%FFFFFFXX`; on unsigned-char platforms
/// it prints `%XX`. We always print `%XX` (doc/protocol.md, "Differences").
pub fn encode_reply_token(raw: &[u8], out: &mut Vec<u8>) {
    for &b in raw {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'~' | b'.' | b'-') {
            out.push(b);
        } else {
            push_pct(b, out);
        }
    }
}

/// Decode a reply token (client side). `%XX` with two hex digits is one byte; the
/// sign-extended `%FFFFFFXX` an x86 `backupcyrusd` prints for a byte >= 0x80 is also
/// one byte; any other `%` is kept literally, as the Perl client's `deuri` does.
pub fn decode_reply_token(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'%' {
            if let Some(v) = sign_extended(raw.get(i + 1..i + 9)) {
                out.push(v);
                i += 9;
                continue;
            }
            if let (Some(h), Some(l)) = (strict_hex(raw.get(i + 1)), strict_hex(raw.get(i + 2))) {
                out.push((h << 4) | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn strict_hex(b: Option<&u8>) -> Option<u8> {
    let b = *b?;
    if b.is_ascii_hexdigit() {
        hex_val(b)
    } else {
        None
    }
}

fn sign_extended(s: Option<&[u8]>) -> Option<u8> {
    let s = s?;
    if !s.get(..6)?.eq_ignore_ascii_case(b"FFFFFF") {
        return None;
    }
    let v = (strict_hex(s.get(6))? << 4) | strict_hex(s.get(7))?;
    // upstream only sign-extends bytes with the high bit set
    (v >= 0x80).then_some(v)
}

/// Cut a byte string at its first NUL, as C string functions see it.
pub fn c_str(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

/// C `atoi` of a token, stored into a `uint32_t` as upstream's `FDATA` does: optional
/// leading blanks and sign, then digits; overflow clamps as glibc's `strtol` does on
/// a 64-bit `long`, and the `int` result is truncated to 32 bits.
pub fn c_atoi_u32(b: &[u8]) -> u32 {
    let mut i = 0;
    while b.get(i).is_some_and(|&c| is_c_space(c)) {
        i += 1;
    }
    let neg = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut v: i64 = 0;
    let mut overflow = false;
    while let Some(&d) = b.get(i).filter(|c| c.is_ascii_digit()) {
        match v
            .checked_mul(10)
            .and_then(|x| x.checked_add(i64::from(d - b'0')))
        {
            Some(n) => v = n,
            None => overflow = true,
        }
        i += 1;
    }
    let long = match (overflow, neg) {
        (true, false) => i64::MAX,
        (true, true) => i64::MIN,
        (false, true) => v.wrapping_neg(),
        (false, false) => v,
    };
    // (int)long then (uint32_t)int: both keep the low 32 bits
    long as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_stops_at_c_space_parens_and_quote() {
        let mut c = Cursor::new(b"FMETA\tslot(x\"y z\r", true);
        assert_eq!(c.word(), (&b"FMETA"[..], Term::Byte(b'\t')));
        assert_eq!(c.word(), (&b"slot"[..], Term::Byte(b'(')));
        assert_eq!(c.word(), (&b"x"[..], Term::Byte(b'"')));
        assert_eq!(c.word(), (&b"y"[..], Term::Byte(b' ')));
        assert_eq!(c.word(), (&b"z"[..], Term::Byte(b'\r')));
        assert_eq!(c.word(), (&b""[..], Term::Newline));
        let mut c = Cursor::new(b"a  b", false);
        assert_eq!(c.word(), (&b"a"[..], Term::Byte(b' ')));
        assert_eq!(c.word(), (&b""[..], Term::Byte(b' ')));
        assert_eq!(c.word(), (&b"b"[..], Term::Eof));
    }

    #[test]
    fn astring_forms() {
        let mut c = Cursor::new(br#""a\"b c" x"#, true);
        assert_eq!(
            c.astring(),
            AString::Value(b"a\"b c".to_vec(), Term::Byte(b' '))
        );
        assert_eq!(c.astring(), AString::Value(b"x".to_vec(), Term::Newline));
        assert_eq!(
            Cursor::new(b" x", true).astring(),
            AString::Value(vec![], Term::Eof)
        );
        assert_eq!(
            Cursor::new(b"\"open", true).astring(),
            AString::Value(b"open".to_vec(), Term::Eof)
        );
        assert_eq!(Cursor::new(b"{3}", true).astring(), AString::Literal);
        assert_eq!(
            Cursor::new(b"", true).astring(),
            AString::Value(vec![], Term::Eof)
        );
    }

    #[test]
    fn request_decoding_matches_upstream_quirks() {
        assert_eq!(decode_request_token(b"user%2Ebob"), b"user.bob");
        assert_eq!(decode_request_token(b"a%20b"), b"a b");
        // invalid escape: '%' kept, the two bytes dropped
        assert_eq!(decode_request_token(b"%zzab"), b"%ab");
        // too short to be an escape
        assert_eq!(decode_request_token(b"x%4"), b"x%4");
        assert_eq!(decode_request_token(b"%"), b"%");
        // the high bit is masked off before the hex lookup
        assert_eq!(decode_request_token(b"%\xb1\xb1"), [0x11]);
        assert_eq!(decode_request_token(b"%00"), [0]);
    }

    #[test]
    fn request_encoding_is_the_perl_clients() {
        let mut out = Vec::new();
        encode_request_token(b"Sent Items/2024,a~b", &mut out);
        assert_eq!(out, b"Sent%20Items%2F2024,a%7Eb");
        for b in 0..=255u8 {
            let mut e = Vec::new();
            encode_request_token(&[b], &mut e);
            assert_eq!(decode_request_token(&e), [b]);
        }
    }

    #[test]
    fn reply_encoding_round_trips() {
        let mut out = Vec::new();
        encode_reply_token(b"Sent Items,~x\xc3", &mut out);
        assert_eq!(out, b"Sent%20Items%2C~x%C3");
        assert_eq!(decode_reply_token(&out), b"Sent Items,~x\xc3");
        assert_eq!(decode_reply_token(b"a%FFFFFFC3b"), b"a\xc3b");
        assert_eq!(decode_reply_token(b"%zz%4"), b"%zz%4");
        for b in 0..=255u8 {
            let mut e = Vec::new();
            encode_reply_token(&[b], &mut e);
            assert_eq!(decode_reply_token(&e), [b]);
        }
    }

    #[test]
    fn atoi_like_glibc() {
        assert_eq!(c_atoi_u32(b"42"), 42);
        assert_eq!(c_atoi_u32(b"007x"), 7);
        assert_eq!(c_atoi_u32(b"abc"), 0);
        assert_eq!(c_atoi_u32(b"-1"), u32::MAX);
        assert_eq!(c_atoi_u32(b"4294967297"), 1);
        assert_eq!(c_atoi_u32(b"99999999999999999999999"), u32::MAX);
        assert_eq!(c_str(b"ab\0cd"), b"ab");
    }
}
