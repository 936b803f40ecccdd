//! Pure parsing of IMAP4rev1 server responses (RFC 3501 section 7 and 9).
//!
//! The connection layer in `imap/mod.rs` assembles one whole response, its line plus
//! any `{N}` literals and the line continuations after them, into one byte buffer; the
//! functions here turn that buffer into a [`Response`]. Nothing here does I/O, and
//! nothing panics on server input: every length is checked against the buffer.
#![forbid(unsafe_code)]

use std::fmt;

/// One token of response data.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// An atom or number, including flags (`\Seen`) and section specs (`BODY[HEADER]<0>`).
    Atom(Vec<u8>),
    /// A quoted string, unescaped.
    Quoted(Vec<u8>),
    /// A literal's bytes.
    Literal(Vec<u8>),
    /// `NIL`.
    Nil,
    /// A parenthesised list.
    List(Vec<Value>),
}

impl Value {
    /// The bytes of an atom, quoted string or literal; `None` for NIL and lists.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Atom(b) | Value::Quoted(b) | Value::Literal(b) => Some(b),
            Value::Nil | Value::List(_) => None,
        }
    }

    /// The value as (lossy) UTF-8 text; `None` for NIL and lists.
    pub fn as_text(&self) -> Option<String> {
        self.as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// The value as an unsigned number, if it is an atom made of digits.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Atom(b) if !b.is_empty() && b.iter().all(u8::is_ascii_digit) => {
                std::str::from_utf8(b).ok()?.parse().ok()
            }
            _ => None,
        }
    }

    /// The items of a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// Whether this is an atom equal (ASCII case-insensitively) to `word`.
    pub fn is_atom(&self, word: &str) -> bool {
        matches!(self, Value::Atom(b) if b.eq_ignore_ascii_case(word.as_bytes()))
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Atom(b) => write!(f, "{}", String::from_utf8_lossy(b)),
            Value::Quoted(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::Literal(b) => write!(f, "{{{}}}", b.len()),
            Value::Nil => f.write_str("NIL"),
            Value::List(v) => f.debug_list().entries(v).finish(),
        }
    }
}

/// The status word of a status response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    PreAuth,
    Bye,
}

impl Status {
    fn from_word(w: &[u8]) -> Option<Status> {
        let up = w.to_ascii_uppercase();
        Some(match up.as_slice() {
            b"OK" => Status::Ok,
            b"NO" => Status::No,
            b"BAD" => Status::Bad,
            b"PREAUTH" => Status::PreAuth,
            b"BYE" => Status::Bye,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
            Status::PreAuth => "PREAUTH",
            Status::Bye => "BYE",
        })
    }
}

/// A status response's body: `[code] text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusText {
    pub status: Status,
    /// The response code inside `[...]`, tokenised (`APPENDUID 12 3` gives three atoms).
    pub code: Option<Vec<Value>>,
    /// The human-readable text after the code.
    pub text: String,
}

impl StatusText {
    /// The response code's arguments if its name is `name` (e.g. `"UIDVALIDITY"`).
    pub fn code_args(&self, name: &str) -> Option<&[Value]> {
        let code = self.code.as_ref()?;
        let (first, rest) = code.split_first()?;
        first.is_atom(name).then_some(rest)
    }
}

/// One server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `tag OK|NO|BAD [code] text`.
    Tagged { tag: String, body: StatusText },
    /// `* OK|NO|BAD|PREAUTH|BYE [code] text`.
    UntaggedStatus(StatusText),
    /// Any other untagged response, tokenised: `* 4 EXISTS` gives `[4, EXISTS]`.
    Data(Vec<Value>),
    /// `+ text`.
    Continuation(Vec<u8>),
}

/// Why a response did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseError {
    /// Byte offset in the response where parsing stopped.
    pub offset: usize,
    /// What was expected there.
    pub expected: &'static str,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed imap response at byte {}: expected {}",
            self.offset, self.expected
        )
    }
}

impl std::error::Error for ResponseError {}

/// If `line` (without its CRLF) ends with a literal announcement `{N}` or `{N+}`,
/// the literal's length.
pub fn literal_suffix(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Parse one complete response (CRLF at the end optional).
pub fn parse_response(buf: &[u8]) -> Result<Response, ResponseError> {
    let buf = buf.strip_suffix(b"\r\n").unwrap_or(buf);
    let mut p = Parser { buf, pos: 0 };
    if buf.starts_with(b"+") {
        let rest = buf.get(1..).unwrap_or_default();
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        return Ok(Response::Continuation(rest.to_vec()));
    }
    if buf.starts_with(b"* ") {
        p.pos = 2;
        let save = p.pos;
        let word = p.word();
        if let Some(status) = Status::from_word(word) {
            return Ok(Response::UntaggedStatus(p.status_text(status)?));
        }
        p.pos = save;
        let values = p.values_until_end()?;
        return Ok(Response::Data(values));
    }
    let tag = p.word().to_vec();
    if tag.is_empty() {
        return Err(p.err("tag"));
    }
    p.expect_space()?;
    let status = Status::from_word(p.word()).ok_or_else(|| p.err("OK, NO or BAD"))?;
    let body = p.status_text(status)?;
    Ok(Response::Tagged {
        tag: String::from_utf8_lossy(&tag).into_owned(),
        body,
    })
}

/// Tokenise a sequence of values (the inside of a list, without parentheses).
pub fn parse_values(buf: &[u8]) -> Result<Vec<Value>, ResponseError> {
    Parser { buf, pos: 0 }.values_until_end()
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, expected: &'static str) -> ResponseError {
        ResponseError {
            offset: self.pos,
            expected,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Bytes up to the next space (or end).
    fn word(&mut self) -> &'a [u8] {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b == b' ' {
                break;
            }
            self.pos += 1;
        }
        &self.buf[start..self.pos]
    }

    fn expect_space(&mut self) -> Result<(), ResponseError> {
        if self.peek() == Some(b' ') {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err("space"))
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn status_text(&mut self, status: Status) -> Result<StatusText, ResponseError> {
        self.skip_spaces();
        let mut code = None;
        if self.peek() == Some(b'[') {
            let start = self.pos + 1;
            let end = self
                .matching_bracket(self.pos)
                .ok_or_else(|| self.err("]"))?;
            let inner = &self.buf[start..end];
            let mut sub = Parser { buf: inner, pos: 0 };
            let values = sub.values_until_end().map_err(|e| ResponseError {
                offset: start + e.offset,
                expected: e.expected,
            })?;
            code = Some(values);
            self.pos = end + 1;
            self.skip_spaces();
        }
        let text = String::from_utf8_lossy(&self.buf[self.pos..]).into_owned();
        self.pos = self.buf.len();
        Ok(StatusText { status, code, text })
    }

    /// Index of the `]` that closes the `[` at `open`, skipping quoted strings and literals.
    fn matching_bracket(&self, open: usize) -> Option<usize> {
        let mut depth = 0usize;
        let mut i = open;
        let mut in_quote = false;
        while i < self.buf.len() {
            let b = self.buf[i];
            if in_quote {
                match b {
                    b'\\' => i += 1,
                    b'"' => in_quote = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => in_quote = true,
                    b'[' => depth += 1,
                    b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i);
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        None
    }

    fn values_until_end(&mut self) -> Result<Vec<Value>, ResponseError> {
        let mut out = Vec::new();
        loop {
            self.skip_spaces();
            match self.peek() {
                None => return Ok(out),
                Some(b')') => return Err(self.err("value, not ')'")),
                Some(_) => out.push(self.value(0)?),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ResponseError> {
        // Bound nesting so hostile input cannot overflow the stack.
        if depth > 64 {
            return Err(self.err("less nesting"));
        }
        match self.peek() {
            None => Err(self.err("value")),
            Some(b'(') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_spaces();
                    match self.peek() {
                        None => return Err(self.err(")")),
                        Some(b')') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        Some(_) => items.push(self.value(depth + 1)?),
                    }
                }
            }
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(),
            Some(_) => {
                let atom = self.atom()?;
                if atom.eq_ignore_ascii_case(b"NIL") {
                    Ok(Value::Nil)
                } else {
                    Ok(Value::Atom(atom))
                }
            }
        }
    }

    fn quoted(&mut self) -> Result<Value, ResponseError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err("closing quote")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Value::Quoted(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let b = self.peek().ok_or_else(|| self.err("escaped character"))?;
                    out.push(b);
                    self.pos += 1;
                }
                Some(b'\r') | Some(b'\n') => return Err(self.err("no line end in quoted")),
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> Result<Value, ResponseError> {
        let close = self.buf[self.pos..]
            .iter()
            .position(|&b| b == b'}')
            .ok_or_else(|| self.err("literal length"))?;
        let spec = &self.buf[self.pos + 1..self.pos + close];
        let spec = spec.strip_suffix(b"+").unwrap_or(spec);
        let len: usize = std::str::from_utf8(spec)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.err("literal length digits"))?;
        self.pos += close + 1;
        if self.buf.get(self.pos..self.pos + 2) != Some(b"\r\n") {
            return Err(self.err("CRLF after literal length"));
        }
        self.pos += 2;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("literal bytes"))?;
        let bytes = self.buf[self.pos..end].to_vec();
        self.pos = end;
        Ok(Value::Literal(bytes))
    }

    /// An atom; `[` ... `]` sections (which may hold spaces and parentheses) and a
    /// following `<partial>` stay part of it, as in `BODY[HEADER.FIELDS (TO)]<0>`.
    fn atom(&mut self) -> Result<Vec<u8>, ResponseError> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'(' | b')' | b'"' | b'{' | b'\r' | b'\n' => break,
                b'[' => {
                    let end = self
                        .matching_bracket(self.pos)
                        .ok_or_else(|| self.err("]"))?;
                    self.pos = end + 1;
                }
                b'<' if self.pos > start && self.buf[self.pos - 1] == b']' => {
                    let close = self.buf[self.pos..]
                        .iter()
                        .position(|&c| c == b'>')
                        .ok_or_else(|| self.err(">"))?;
                    self.pos += close + 1;
                }
                _ => self.pos += 1,
            }
        }
        if self.pos == start {
            return Err(self.err("atom"));
        }
        Ok(self.buf[start..self.pos].to_vec())
    }
}

/// Quote `s` as an IMAP quoted string if it can be one (no CR, LF, NUL or 8-bit);
/// `None` means it must be sent as a literal.
pub fn quote(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() > 1000
        || s.iter()
            .any(|&b| b == 0 || b == b'\r' || b == b'\n' || b >= 0x80)
    {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(s: &str) -> Value {
        Value::Atom(s.as_bytes().to_vec())
    }

    #[test]
    fn greeting_with_capability_code() {
        let r = parse_response(
            b"* OK [CAPABILITY IMAP4rev1 LITERAL+ ID AUTH=PLAIN SASL-IR] sbx Cyrus IMAP 3.6.1 server ready\r\n",
        )
        .unwrap();
        let Response::UntaggedStatus(st) = r else {
            panic!("{r:?}")
        };
        assert_eq!(st.status, Status::Ok);
        let caps = st.code_args("CAPABILITY").unwrap();
        assert_eq!(caps.len(), 5);
        assert!(caps[1].is_atom("literal+"));
        assert_eq!(st.text, "sbx Cyrus IMAP 3.6.1 server ready");
    }

    #[test]
    fn tagged_appenduid() {
        let r = parse_response(b"A3 OK [APPENDUID 1795987218 12] Completed\r\n").unwrap();
        let Response::Tagged { tag, body } = r else {
            panic!()
        };
        assert_eq!(tag, "A3");
        let args = body.code_args("APPENDUID").unwrap();
        assert_eq!(args[0].as_u64(), Some(1795987218));
        assert_eq!(args[1].as_u64(), Some(12));
        assert_eq!(body.text, "Completed");
    }

    #[test]
    fn tagged_no_without_code() {
        let r = parse_response(b"A9 NO Mailbox does not exist\r\n").unwrap();
        let Response::Tagged { body, .. } = r else {
            panic!()
        };
        assert_eq!(body.status, Status::No);
        assert_eq!(body.code, None);
        assert_eq!(body.text, "Mailbox does not exist");
    }

    #[test]
    fn permanentflags_with_backslash_star() {
        let r = parse_response(
            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Draft \\Deleted \\Seen $Forwarded \\*)] Ok\r\n",
        )
        .unwrap();
        let Response::UntaggedStatus(st) = r else {
            panic!()
        };
        let flags = st.code_args("PERMANENTFLAGS").unwrap()[0]
            .as_list()
            .unwrap();
        assert_eq!(flags.len(), 7);
        assert_eq!(flags[6], atom("\\*"));
    }

    #[test]
    fn mailboxid_code_is_a_list() {
        let r = parse_response(b"A4 OK [MAILBOXID (aptnfh8oet69c2q89lgw5i1j)] Completed").unwrap();
        let Response::Tagged { body, .. } = r else {
            panic!()
        };
        let id = body.code_args("MAILBOXID").unwrap()[0].as_list().unwrap();
        assert_eq!(id[0], atom("aptnfh8oet69c2q89lgw5i1j"));
    }

    #[test]
    fn list_line_with_quoted_delimiter() {
        let r = parse_response(b"* LIST (\\HasNoChildren) \".\" user.alice\r\n").unwrap();
        assert_eq!(
            r,
            Response::Data(vec![
                atom("LIST"),
                Value::List(vec![atom("\\HasNoChildren")]),
                Value::Quoted(b".".to_vec()),
                atom("user.alice"),
            ])
        );
    }

    #[test]
    fn list_with_nil_delimiter_and_literal_name() {
        let r = parse_response(b"* LIST () NIL {7}\r\nA \"b\" c\r\n").unwrap();
        assert_eq!(
            r,
            Response::Data(vec![
                atom("LIST"),
                Value::List(vec![]),
                Value::Nil,
                Value::Literal(b"A \"b\" c".to_vec()),
            ])
        );
    }

    // Captured from Cyrus 3.6.1 (UID FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE DIGEST.SHA1 BODY.PEEK[])).
    #[test]
    fn fetch_with_literal_body_and_padded_date() {
        let raw: &[u8] = b"* 1 FETCH (FLAGS (\\Recent \\Seen $Forwarded) UID 1 DIGEST.SHA1 9e2fa0f454cc568e32fd6e196f03376628adb2a2 INTERNALDATE \" 1-Jan-2020 09:00:00 +0000\" RFC822.SIZE 32 BODY[] {32}\r\nFrom: a@b\r\nSubject: hi\r\n\r\nbody\r\n)\r\n";
        let Response::Data(v) = parse_response(raw).unwrap() else {
            panic!()
        };
        assert_eq!(v[0].as_u64(), Some(1));
        assert!(v[1].is_atom("FETCH"));
        let items = v[2].as_list().unwrap();
        assert_eq!(items.len(), 12);
        assert_eq!(items[6], atom("INTERNALDATE"));
        assert_eq!(
            items[7],
            Value::Quoted(b" 1-Jan-2020 09:00:00 +0000".to_vec())
        );
        assert_eq!(items[10], atom("BODY[]"));
        assert_eq!(
            items[11],
            Value::Literal(b"From: a@b\r\nSubject: hi\r\n\r\nbody\r\n".to_vec())
        );
    }

    #[test]
    fn section_atoms_keep_spaces_and_partial() {
        let v =
            parse_values(b"BODY[HEADER.FIELDS (FROM TO)]<0> {2}\r\nab BINARY.SIZE[1] 7").unwrap();
        assert_eq!(v[0], atom("BODY[HEADER.FIELDS (FROM TO)]<0>"));
        assert_eq!(v[1], Value::Literal(b"ab".to_vec()));
        assert_eq!(v[2], atom("BINARY.SIZE[1]"));
    }

    #[test]
    fn quoted_escapes() {
        let v = parse_values(b"\"a \\\"q\\\" \\\\ b\"").unwrap();
        assert_eq!(v, vec![Value::Quoted(b"a \"q\" \\ b".to_vec())]);
        assert_eq!(quote(b"a \"q\" \\ b").unwrap(), b"\"a \\\"q\\\" \\\\ b\"");
        assert_eq!(quote(b"line\r\n"), None);
        assert_eq!(quote("caf\u{e9}".as_bytes()), None);
    }

    #[test]
    fn continuation() {
        assert_eq!(
            parse_response(b"+ go ahead\r\n").unwrap(),
            Response::Continuation(b"go ahead".to_vec())
        );
        assert_eq!(
            parse_response(b"+\r\n").unwrap(),
            Response::Continuation(Vec::new())
        );
    }

    #[test]
    fn acl_and_bye() {
        let r = parse_response(b"* ACL INBOX alice lrswipkxtecdan anyone p").unwrap();
        let Response::Data(v) = r else { panic!() };
        assert_eq!(v.len(), 6);
        let r = parse_response(b"* BYE LOGOUT received").unwrap();
        assert!(matches!(
            r,
            Response::UntaggedStatus(StatusText {
                status: Status::Bye,
                ..
            })
        ));
    }

    #[test]
    fn literal_suffix_detection() {
        assert_eq!(literal_suffix(b"* 1 FETCH (BODY[] {32}"), Some(32));
        assert_eq!(literal_suffix(b"A1 APPEND x {5+}"), Some(5));
        assert_eq!(literal_suffix(b"* OK {x}"), None);
        assert_eq!(literal_suffix(b"* OK {}"), None);
        assert_eq!(literal_suffix(b"* OK done"), None);
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        for bad in [
            &b"* 1 FETCH (FLAGS (\\Seen)"[..],
            b"* LIST (\\X) \".\" \"unterminated",
            b"* 1 FETCH (BODY[] {99}\r\nshort)",
            b"* 1 FETCH (BODY[] {99999999999999999999}\r\n)",
            b"* 1 FETCH (BODY[ x)",
            b"A1",
            b"A1 MAYBE so",
            b"* X )",
        ] {
            assert!(
                parse_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = [b'('; 200];
        assert!(parse_values(&deep).is_err());
    }
}
