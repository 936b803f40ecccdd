//! Replies: the service writes them with [`ReplyWriter`] over any `Write`; our client
//! reads them with [`ReplyReader`] over any `Read`, verifying every `DATA` payload
//! against the SHA-1 in its closing `DONE` line.
//!
//! Reply lines end in a bare `\n`. Words are separated by one space; names are
//! percent-encoded with upstream's `puturistring` set ([`encode_reply_token`]). A file
//! travels as `DATA <name> <size> <mtime> <inode>\n`, exactly `size` raw bytes, then
//! `DONE <name> <sha1 hex>\n`.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};

use sha1::{Digest, Sha1};

use super::line::LineReader;
use super::token::{decode_reply_token, encode_reply_token};
use super::{AUTH_LEN, MAX_LINE, ProtocolError};

/// Size, modification time and inode as upstream prints them (`%lu` each, so a
/// negative `mtime` would print as its two's complement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileStat {
    pub size: u64,
    pub mtime: u64,
    pub ino: u64,
}

impl FileStat {
    /// From `stat(2)` data, the fields upstream uses (`st_size`, `st_mtim.tv_sec`,
    /// `st_ino`).
    pub fn from_metadata(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileStat {
            size: m.size(),
            mtime: m.mtime() as u64,
            ino: m.ino(),
        }
    }
}

/// The synthetic inode upstream reports for `mailbox_annotations`: the first two bytes
/// of the SHA-1 read as a native (x86: little-endian) `uint16_t`.
pub fn synthetic_ino(sha1: &[u8; 20]) -> u64 {
    u64::from(u16::from_le_bytes([sha1[0], sha1[1]]))
}

/// The announcement of one file payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataHeader {
    /// Decoded file name (`seen`, `index`, a UID as sent, ...).
    pub name: Vec<u8>,
    pub stat: FileStat,
}

/// One reply line, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK`.
    Ok,
    /// `NO <text>` (raw text; names inside it are percent-encoded by the server).
    No(Vec<u8>),
    /// `DONE <words>...`, words decoded.
    Done(Vec<Vec<u8>>),
    /// `USER <userid>`.
    User(Vec<u8>),
    /// `FOLDER <name> <uniqueid> <jmapid>`.
    Folder {
        name: Vec<u8>,
        uniqueid: Vec<u8>,
        jmapid: Vec<u8>,
    },
    /// `STAT [<folder>] <name> <size> <mtime> <inode>` (the folder only in
    /// `FMULTISTATUS`).
    Stat {
        folder: Option<Vec<u8>>,
        name: Vec<u8>,
        stat: FileStat,
    },
    /// `DATA <name> <size> <mtime> <inode>`; the payload follows.
    Data(DataHeader),
    /// Extension: `CAP <name> [<value>]`.
    Cap {
        name: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    /// Extension: `CHALLENGE <64 hex>`: the server's AUTH nonce.
    Challenge([u8; AUTH_LEN]),
    /// Extension: `PROOF <64 hex>`: the server's HMAC after a right AUTH answer.
    Proof([u8; AUTH_LEN]),
    /// Extension: `STATUS <key> <value>`.
    Status { key: Vec<u8>, value: u64 },
    /// Extension: `STATUS <key> <token>` whose value is not a number (the Cyrus
    /// version, conventions), decoded.
    StatusText { key: Vec<u8>, value: Vec<u8> },
    /// Extension: `PARTITION <name> <path> <st_dev>` (answer to `PARTITIONS`).
    Partition {
        name: Vec<u8>,
        path: Vec<u8>,
        dev: u64,
    },
    /// Extension: `USERPART <userid> <partition>`: the user's INBOX partition.
    UserPart { user: Vec<u8>, partition: Vec<u8> },
    /// Extension: `SHARED <owner> <uniqueid> <partition>`: one top-level shared
    /// hierarchy (answer to `SHARED`).
    Shared {
        owner: Vec<u8>,
        uniqueid: Vec<u8>,
        partition: Vec<u8>,
    },
    /// Extension: `FDELETED <name> <uniqueid> <time> <former name> <internal name>`:
    /// one delayed-delete folder (answer to `FDELETED`).
    FDeleted {
        name: Vec<u8>,
        uniqueid: Vec<u8>,
        time: u64,
        original: Vec<u8>,
        internal: Vec<u8>,
    },
}

fn num(w: &[u8], what: &'static str) -> Result<u64, ProtocolError> {
    std::str::from_utf8(w)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtocolError::MalformedReply { what })
}

fn stat_of(w: &[&[u8]]) -> Result<FileStat, ProtocolError> {
    match w {
        [s, m, i] => Ok(FileStat {
            size: num(s, "size")?,
            mtime: num(m, "mtime")?,
            ino: num(i, "inode")?,
        }),
        _ => Err(ProtocolError::MalformedReply {
            what: "stat fields",
        }),
    }
}

/// Parse one reply line (without its newline).
pub fn parse_reply(line: &[u8]) -> Result<Reply, ProtocolError> {
    if line == b"OK" {
        return Ok(Reply::Ok);
    }
    if let Some(text) = line.strip_prefix(b"NO ") {
        return Ok(Reply::No(text.to_vec()));
    }
    let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let d = |w: &[u8]| decode_reply_token(w);
    let bad = |what| Err(ProtocolError::MalformedReply { what });
    match words.as_slice() {
        [b"DONE", rest @ ..] => Ok(Reply::Done(rest.iter().map(|w| d(w)).collect())),
        [b"USER", u] => Ok(Reply::User(d(u))),
        [b"FOLDER", n, u, j] => Ok(Reply::Folder {
            name: d(n),
            uniqueid: d(u),
            jmapid: d(j),
        }),
        [b"STAT", n, rest @ ..] if rest.len() == 3 => Ok(Reply::Stat {
            folder: None,
            name: d(n),
            stat: stat_of(rest)?,
        }),
        [b"STAT", f, n, rest @ ..] if rest.len() == 3 => Ok(Reply::Stat {
            folder: Some(d(f)),
            name: d(n),
            stat: stat_of(rest)?,
        }),
        [b"DATA", n, rest @ ..] if rest.len() == 3 => Ok(Reply::Data(DataHeader {
            name: d(n),
            stat: stat_of(rest)?,
        })),
        [b"CAP", n] => Ok(Reply::Cap {
            name: d(n),
            value: None,
        }),
        [b"CAP", n, v] => Ok(Reply::Cap {
            name: d(n),
            value: Some(d(v)),
        }),
        [b"CHALLENGE", h] => {
            let mut nonce = [0u8; AUTH_LEN];
            match hex::decode_to_slice(h, &mut nonce) {
                Ok(()) => Ok(Reply::Challenge(nonce)),
                Err(_) => bad("challenge is not 64 hex digits"),
            }
        }
        [b"PROOF", h] => {
            let mut proof = [0u8; AUTH_LEN];
            match hex::decode_to_slice(h, &mut proof) {
                Ok(()) => Ok(Reply::Proof(proof)),
                Err(_) => bad("proof is not 64 hex digits"),
            }
        }
        [b"STATUS", k, v] => Ok(match num(v, "status value") {
            Ok(value) => Reply::Status { key: d(k), value },
            Err(_) => Reply::StatusText {
                key: d(k),
                value: d(v),
            },
        }),
        [b"PARTITION", n, p, v] => Ok(Reply::Partition {
            name: d(n),
            path: d(p),
            dev: num(v, "partition device")?,
        }),
        [b"USERPART", u, p] => Ok(Reply::UserPart {
            user: d(u),
            partition: d(p),
        }),
        [b"SHARED", o, u, p] => Ok(Reply::Shared {
            owner: d(o),
            uniqueid: d(u),
            partition: d(p),
        }),
        [b"FDELETED", n, u, t, o, i] => Ok(Reply::FDeleted {
            name: d(n),
            uniqueid: d(u),
            time: num(t, "deletion time")?,
            original: d(o),
            internal: d(i),
        }),
        _ => bad("unknown reply line"),
    }
}

/// Writes replies; counts bytes for the session summary and `STATUS`.
#[derive(Debug)]
pub struct ReplyWriter<W> {
    out: W,
    bytes_out: u64,
}

impl<W: Write> ReplyWriter<W> {
    /// Wrap a connection.
    pub fn new(out: W) -> Self {
        ReplyWriter { out, bytes_out: 0 }
    }

    /// Bytes written so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// The wrapped writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    fn raw(&mut self, b: &[u8]) -> Result<(), ProtocolError> {
        self.out
            .write_all(b)
            .map_err(|e| ProtocolError::io("writing reply", &e))?;
        self.bytes_out = self.bytes_out.saturating_add(b.len() as u64);
        Ok(())
    }

    /// Push buffered output to the peer (upstream flushes after every command).
    pub fn flush(&mut self) -> Result<(), ProtocolError> {
        self.out
            .flush()
            .map_err(|e| ProtocolError::io("flushing reply", &e))
    }

    /// `OK`.
    pub fn ok(&mut self) -> Result<(), ProtocolError> {
        self.raw(b"OK\n")
    }

    /// `NO <text>`, text written as given.
    pub fn no(&mut self, text: &[u8]) -> Result<(), ProtocolError> {
        let mut l = b"NO ".to_vec();
        l.extend_from_slice(text);
        l.push(b'\n');
        self.raw(&l)
    }

    /// `NO <prefix> <encoded name>`, e.g. `NO no such file 17`.
    pub fn no_name(&mut self, prefix: &str, name: &[u8]) -> Result<(), ProtocolError> {
        let mut l = format!("NO {prefix} ").into_bytes();
        encode_reply_token(name, &mut l);
        l.push(b'\n');
        self.raw(&l)
    }

    /// `DONE <what>` followed by encoded words.
    pub fn done(&mut self, what: &str, words: &[&[u8]]) -> Result<(), ProtocolError> {
        let mut l = format!("DONE {what}").into_bytes();
        for w in words {
            l.push(b' ');
            encode_reply_token(w, &mut l);
        }
        l.push(b'\n');
        self.raw(&l)
    }

    /// `USER <userid>`.
    pub fn user(&mut self, user: &[u8]) -> Result<(), ProtocolError> {
        self.words(b"USER", &[user], None)
    }

    /// `FOLDER <name> <uniqueid> <jmapid>`.
    pub fn folder(
        &mut self,
        name: &[u8],
        uniqueid: &[u8],
        jmapid: &[u8],
    ) -> Result<(), ProtocolError> {
        self.words(b"FOLDER", &[name, uniqueid, jmapid], None)
    }

    /// `STAT [<folder>] <name> <size> <mtime> <inode>`.
    pub fn stat(
        &mut self,
        folder: Option<&[u8]>,
        name: &[u8],
        st: FileStat,
    ) -> Result<(), ProtocolError> {
        match folder {
            Some(f) => self.words(b"STAT", &[f, name], Some(st)),
            None => self.words(b"STAT", &[name], Some(st)),
        }
    }

    fn words(
        &mut self,
        key: &[u8],
        words: &[&[u8]],
        st: Option<FileStat>,
    ) -> Result<(), ProtocolError> {
        let mut l = key.to_vec();
        for w in words {
            l.push(b' ');
            encode_reply_token(w, &mut l);
        }
        if let Some(st) = st {
            l.extend_from_slice(format!(" {} {} {}", st.size, st.mtime, st.ino).as_bytes());
        }
        l.push(b'\n');
        self.raw(&l)
    }

    /// One file: `DATA` line, exactly `st.size` bytes copied from `src`, `DONE` line
    /// with the SHA-1 of those bytes. If `src` runs dry early the frame cannot be
    /// completed: the error must end the session (the peer sees a short payload).
    pub fn data(
        &mut self,
        name: &[u8],
        st: FileStat,
        src: &mut dyn Read,
    ) -> Result<[u8; 20], ProtocolError> {
        self.words(b"DATA", &[name], Some(st))?;
        let mut hasher = Sha1::new();
        let mut left = st.size;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
            let n = match src.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(ProtocolError::ShortSource {
                        name: String::from_utf8_lossy(name).into_owned(),
                        announced: st.size,
                        got: st.size - left,
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ProtocolError::io("reading a file to send", &e)),
            };
            hasher.update(&buf[..n]);
            self.raw(&buf[..n])?;
            left -= n as u64;
        }
        let sha: [u8; 20] = hasher.finalize().into();
        let hexed = hex::encode(sha);
        self.done_file(name, &hexed)?;
        Ok(sha)
    }

    fn done_file(&mut self, name: &[u8], sha_hex: &str) -> Result<(), ProtocolError> {
        let mut l = b"DONE ".to_vec();
        encode_reply_token(name, &mut l);
        l.push(b' ');
        l.extend_from_slice(sha_hex.as_bytes());
        l.push(b'\n');
        self.raw(&l)
    }

    /// Extension: `CAP <name> [<value>]`.
    pub fn cap(&mut self, name: &str, value: Option<&str>) -> Result<(), ProtocolError> {
        match value {
            Some(v) => self.words(b"CAP", &[name.as_bytes(), v.as_bytes()], None),
            None => self.words(b"CAP", &[name.as_bytes()], None),
        }
    }

    /// Extension: `CHALLENGE <64 hex>`.
    pub fn challenge(&mut self, nonce: &[u8; AUTH_LEN]) -> Result<(), ProtocolError> {
        self.raw(format!("CHALLENGE {}\n", hex::encode(nonce)).as_bytes())
    }

    /// Extension: `PROOF <64 hex>`.
    pub fn proof(&mut self, mac: &[u8; AUTH_LEN]) -> Result<(), ProtocolError> {
        self.raw(format!("PROOF {}\n", hex::encode(mac)).as_bytes())
    }

    /// Extension: `STATUS <key> <value>`.
    pub fn status(&mut self, key: &str, value: u64) -> Result<(), ProtocolError> {
        self.raw(format!("STATUS {key} {value}\n").as_bytes())
    }

    /// Extension: `STATUS <key> <token>` (the value percent-encoded like names).
    pub fn status_text(&mut self, key: &str, value: &[u8]) -> Result<(), ProtocolError> {
        self.words(b"STATUS", &[key.as_bytes(), value], None)
    }

    /// Extension: `PARTITION <name> <path> <st_dev>`.
    pub fn partition(&mut self, name: &[u8], path: &[u8], dev: u64) -> Result<(), ProtocolError> {
        let dev = dev.to_string();
        self.words(b"PARTITION", &[name, path, dev.as_bytes()], None)
    }

    /// Extension: `SHARED <owner> <uniqueid> <partition>`.
    pub fn shared(
        &mut self,
        owner: &[u8],
        uniqueid: &[u8],
        partition: &[u8],
    ) -> Result<(), ProtocolError> {
        self.words(b"SHARED", &[owner, uniqueid, partition], None)
    }

    /// Extension: `FDELETED <name> <uniqueid> <time> <former name> <internal name>`.
    pub fn fdeleted(
        &mut self,
        name: &[u8],
        uniqueid: &[u8],
        time: u64,
        original: &[u8],
        internal: &[u8],
    ) -> Result<(), ProtocolError> {
        let t = time.to_string();
        self.words(
            b"FDELETED",
            &[name, uniqueid, t.as_bytes(), original, internal],
            None,
        )
    }

    /// Extension: `USERPART <userid> <partition>`.
    pub fn userpart(&mut self, user: &[u8], partition: &[u8]) -> Result<(), ProtocolError> {
        self.words(b"USERPART", &[user, partition], None)
    }
}

/// Reads replies on the client side.
#[derive(Debug)]
pub struct ReplyReader<R> {
    lines: LineReader<R>,
}

impl<R: Read> ReplyReader<R> {
    /// Wrap a connection.
    pub fn new(inner: R) -> Self {
        ReplyReader {
            lines: LineReader::new(inner, MAX_LINE),
        }
    }

    /// Bytes received but not read yet (must be 0 before a STARTTLS handshake).
    pub fn buffered(&self) -> usize {
        self.lines.buffered()
    }

    /// The next reply line; end of stream is an error (a reply was due).
    pub fn next_reply(&mut self) -> Result<Reply, ProtocolError> {
        match self.lines.read_line()? {
            Some(l) if l.terminated => parse_reply(&l.bytes),
            _ => Err(ProtocolError::UnexpectedEof {
                while_: "waiting for a reply line",
            }),
        }
    }

    /// The first line of every answer: `OK`, or `NO <text>` as an error.
    pub fn expect_ok(&mut self) -> Result<(), ProtocolError> {
        match self.next_reply()? {
            Reply::Ok => Ok(()),
            Reply::No(t) => Err(ProtocolError::No(String::from_utf8_lossy(&t).into_owned())),
            other => Err(ProtocolError::UnexpectedReply {
                wanted: "OK or NO",
                got: format!("{other:?}"),
            }),
        }
    }

    /// After a [`Reply::Data`]: copy the payload to `sink`, read the `DONE` line, and
    /// check its name and SHA-1. Returns the verified SHA-1.
    pub fn read_data(
        &mut self,
        hdr: &DataHeader,
        sink: &mut dyn Write,
    ) -> Result<[u8; 20], ProtocolError> {
        let mut hasher = Sha1::new();
        self.lines
            .copy_exact(hdr.stat.size, sink, &mut |c| hasher.update(c))?;
        let sha: [u8; 20] = hasher.finalize().into();
        let computed = hex::encode(sha);
        match self.next_reply()? {
            Reply::Done(words) => match words.as_slice() {
                [name, announced] => {
                    if *name != hdr.name {
                        return Err(ProtocolError::DataNameMismatch {
                            data: String::from_utf8_lossy(&hdr.name).into_owned(),
                            done: String::from_utf8_lossy(name).into_owned(),
                        });
                    }
                    if announced.as_slice() != computed.as_bytes() {
                        return Err(ProtocolError::Sha1Mismatch {
                            name: String::from_utf8_lossy(&hdr.name).into_owned(),
                            announced: String::from_utf8_lossy(announced).into_owned(),
                            computed,
                        });
                    }
                    Ok(sha)
                }
                _ => Err(ProtocolError::MalformedReply {
                    what: "done line after data",
                }),
            },
            other => Err(ProtocolError::UnexpectedReply {
                wanted: "DONE after DATA",
                got: format!("{other:?}"),
            }),
        }
    }
}

#[cfg(test)]
#[path = "reply_tests.rs"]
mod tests;
