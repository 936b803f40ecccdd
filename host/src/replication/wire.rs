//! Writing the replication protocol's DList values (`imap/dlist.c`, `dlist_print`
//! with keys): what `sync_client` sends in `APPLY` and `GET` commands.
//!
//! A value is one of: an atom/string (`prot_printastring`: an atom when it can be, a
//! quoted string, else a `{N+}` literal), a decimal number, a flag (`\Seen`, printed
//! as is), a list `(a b c)`, a kvlist `%(KEY value KEY value)`, or — only in `APPLY
//! MESSAGE` — a file literal `%{<partition> <guid> <size>}` CRLF and exactly `size`
//! bytes, which sync_server writes to `<partition>/sync./<pid>/<guid>` while it parses
//! the line. Every command is one line: `APPLY <KEY> <value>` CRLF (literals inside).
//! Pure: bytes out; no I/O. The reader is `cyrus::dlist` (the same grammar).
#![forbid(unsafe_code)]

use crate::cyrus::Guid;
use crate::cyrus::dlist::print_astring;

/// One value to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An atom or string (printed as an astring: `NIL` and empty strings quoted).
    Str(Vec<u8>),
    /// A decimal number (also dates: Unix seconds).
    Num(u64),
    /// 16 lower-case hex digits (`dlist_sethex64`, e.g. a thread id).
    Hex(u64),
    /// A system flag such as `\Seen`, printed as is.
    Flag(&'static str),
    /// `( ... )`.
    List(Vec<Value>),
    /// `%( KEY value ... )`, keys in the order given.
    Kv(Vec<(&'static str, Value)>),
}

impl Value {
    /// A string value.
    pub fn str(s: impl AsRef<[u8]>) -> Value {
        Value::Str(s.as_ref().to_vec())
    }
}

/// A kvlist builder: `Kv::new().num("UID", 3).str("GUID", ...)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kv(pub Vec<(&'static str, Value)>);

impl Kv {
    /// An empty kvlist.
    pub fn new() -> Kv {
        Kv(Vec::new())
    }
    /// Add a string.
    pub fn str(mut self, k: &'static str, v: impl AsRef<[u8]>) -> Kv {
        self.0.push((k, Value::str(v)));
        self
    }
    /// Add a number.
    pub fn num(mut self, k: &'static str, v: u64) -> Kv {
        self.0.push((k, Value::Num(v)));
        self
    }
    /// Add any value.
    pub fn val(mut self, k: &'static str, v: Value) -> Kv {
        self.0.push((k, v));
        self
    }
    /// As a value.
    pub fn done(self) -> Value {
        Value::Kv(self.0)
    }
}

/// Print `v` the way `dlist_print(dl, 0, out)` prints it.
pub fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Str(b) => print_astring(b, out),
        Value::Num(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Hex(n) => out.extend_from_slice(format!("{n:016x}").as_bytes()),
        Value::Flag(f) => out.extend_from_slice(f.as_bytes()),
        Value::List(items) => {
            out.push(b'(');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                write_value(it, out);
            }
            out.push(b')');
        }
        Value::Kv(items) => {
            out.extend_from_slice(b"%(");
            for (i, (k, it)) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out.extend_from_slice(k.as_bytes());
                out.push(b' ');
                write_value(it, out);
            }
            out.push(b')');
        }
    }
}

/// A whole command line: `<verb> <KEY> <value>` CRLF (verb `APPLY` or `GET`).
pub fn command(verb: &str, key: &str, v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(verb.as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b' ');
    write_value(v, &mut out);
    out.extend_from_slice(b"\r\n");
    out
}

/// The head of one file literal of `APPLY MESSAGE`: `%{<partition> <guid> <size>}`
/// CRLF; the message bytes follow it.
pub fn file_literal_head(partition: &str, guid: &Guid, size: usize) -> Vec<u8> {
    let mut out = b"%{".to_vec();
    print_astring(partition.as_bytes(), &mut out);
    out.push(b' ');
    out.extend_from_slice(guid.to_hex().as_bytes());
    out.extend_from_slice(format!(" {size}}}\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_dlist_print() {
        let rec = Kv::new()
            .num("UID", 1)
            .num("MODSEQ", 3)
            .val(
                "FLAGS",
                Value::List(vec![Value::Flag("\\Seen"), Value::str("$Forwarded")]),
            )
            .str("GUID", "8dc7382c0b5a9bf8e30f844d48be2e704b30d9c9")
            .val(
                "ANNOTATIONS",
                Value::List(vec![
                    Kv::new()
                        .str("ENTRY", "/comment")
                        .str("USERID", "")
                        .num("MODSEQ", 0)
                        .str("VALUE", "my sent")
                        .done(),
                ]),
            )
            .done();
        assert_eq!(
            String::from_utf8(command("APPLY", "X", &rec)).unwrap(),
            "APPLY X %(UID 1 MODSEQ 3 FLAGS (\\Seen $Forwarded) \
             GUID 8dc7382c0b5a9bf8e30f844d48be2e704b30d9c9 ANNOTATIONS \
             (%(ENTRY /comment USERID \"\" MODSEQ 0 VALUE \"my sent\")))\r\n"
        );
        // What Cyrus itself sent for an ACL and a name with a space (GET USER, 3.6.1).
        let mut out = Vec::new();
        write_value(&Value::str("bob\tlrswipkxtecdan\t"), &mut out);
        write_value(&Value::str("user.bob.Work Stuff"), &mut out);
        write_value(&Value::str("\\Sent"), &mut out);
        write_value(&Value::Hex(255), &mut out);
        assert_eq!(
            out,
            b"\"bob\tlrswipkxtecdan\t\"\"user.bob.Work Stuff\"{5+}\r\n\\Sent00000000000000ff"
        );
    }

    #[test]
    fn file_literal() {
        let g = Guid::of(b"hi");
        assert_eq!(
            file_literal_head("p1", &g, 2),
            format!("%{{p1 {} 2}}\r\n", g.to_hex()).into_bytes()
        );
    }
}
