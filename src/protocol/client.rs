//! A client for the protocol: typed calls for every base command, the extensions when
//! the server announces them, and verified file transfer. Works against a stock
//! `backupcyrusd` as well as `cyrvaultd`; [`Client::capabilities`] tells them apart.
//!
//! File bytes are handed to a [`Receiver`] while they arrive; their SHA-1 is checked
//! when the closing `DONE` line comes. On a mismatch the call fails and the receiver
//! must throw away what it got for that file (it only gets `file_done` for good files).
#![forbid(unsafe_code)]

use std::io::{Read, Write};

use super::AUTH_LEN;
use super::ProtocolError;
use super::auth::{BINDING_LEN, Transcript, client_answer, verify_server};
use super::reply::{DataHeader, FileStat, Reply, ReplyReader};
use super::request::{AuthStep, Request, encode_request};

/// Where fetched files go.
pub trait Receiver {
    /// A file starts: where its `header.stat.size` bytes are to be written.
    fn file(&mut self, header: &DataHeader) -> Result<&mut dyn Write, ProtocolError>;
    /// All bytes of the file arrived and match the SHA-1 the server sent.
    fn file_done(&mut self, header: &DataHeader, sha1: &[u8; 20]) -> Result<(), ProtocolError>;
    /// A `NO <text>` line came in place of a file.
    fn missing(&mut self, text: &[u8]) -> Result<(), ProtocolError>;
    /// Any other line inside the answer (`FOLDER` in a SNAPSHOT).
    fn other(&mut self, reply: Reply) -> Result<(), ProtocolError>;
}

/// A [`Receiver`] that keeps everything in memory (small files, tests).
#[derive(Debug, Default)]
pub struct Collect {
    /// Verified files, in order.
    pub files: Vec<(DataHeader, Vec<u8>)>,
    /// Texts of `NO` lines.
    pub missing: Vec<Vec<u8>>,
    /// Other lines, in order.
    pub other: Vec<Reply>,
    current: Vec<u8>,
}

/// The most a receiver reserves ahead for one file on the word of its `DATA` line (a
/// bigger file still arrives, growing its buffer as it comes).
pub const RESERVE_LIMIT: u64 = 256 << 20;

impl Receiver for Collect {
    fn file(&mut self, header: &DataHeader) -> Result<&mut dyn Write, ProtocolError> {
        // Exactly the announced size: a `cyrus.index` of 20 MB grown by doubling would
        // hold 33 MB.
        self.current =
            Vec::with_capacity(usize::try_from(header.stat.size.min(RESERVE_LIMIT)).unwrap_or(0));
        Ok(&mut self.current)
    }
    fn file_done(&mut self, header: &DataHeader, _sha1: &[u8; 20]) -> Result<(), ProtocolError> {
        self.files
            .push((header.clone(), std::mem::take(&mut self.current)));
        Ok(())
    }
    fn missing(&mut self, text: &[u8]) -> Result<(), ProtocolError> {
        self.missing.push(text.to_vec());
        Ok(())
    }
    fn other(&mut self, reply: Reply) -> Result<(), ProtocolError> {
        self.other.push(reply);
        Ok(())
    }
}

/// An announced capability: name and optional value.
pub type Capability = (Vec<u8>, Option<Vec<u8>>);

/// A file name with its stat, from a `STAT` line.
pub type NamedStat = (Vec<u8>, FileStat);

/// The answer to `PARTITIONS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionMap {
    /// `(name, path, st_dev)` per partition.
    pub partitions: Vec<(Vec<u8>, Vec<u8>, u64)>,
    /// `(userid, INBOX partition)` per user.
    pub users: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A `STAT` listing and the words of its closing `DONE` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// `(name, stat)` per `STAT` line.
    pub files: Vec<NamedStat>,
    /// The `DONE` words (`FMETA`, uniqueid, jmapid for FMETA).
    pub done: Vec<Vec<u8>>,
}

/// One folder of an `FMULTISTATUS` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderStatus {
    pub name: Vec<u8>,
    pub uniqueid: Vec<u8>,
    pub jmapid: Vec<u8>,
    /// `(file name, stat)` for `header`, `index`, `annotations`, `mailbox_annotations`
    /// as far as they exist.
    pub files: Vec<NamedStat>,
}

/// One top-level shared hierarchy, from `SHARED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedOwner {
    /// The owner id (`%shared`) the other commands take in place of a user.
    pub owner: Vec<u8>,
    /// The UniqueID of its top-level entry.
    pub uniqueid: Vec<u8>,
    /// Its partition (empty if unknown).
    pub partition: Vec<u8>,
}

/// One delayed-delete folder, from `FDELETED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedFolder {
    /// The name `FMULTISTATUS` lists it under (and `FMETA`/`FDATA` take).
    pub name: Vec<u8>,
    pub uniqueid: Vec<u8>,
    /// When it was deleted (Unix seconds: the hex stamp of its name).
    pub time: u64,
    /// The name it had before (`INBOX.Old`, `Old`, `shared.News`).
    pub original: Vec<u8>,
    /// Cyrus's internal name (`DELETED.user.bob.Old.5F3A1B2C`).
    pub internal: Vec<u8>,
}

/// One connection to a `backupcyrusd` or `cyrvaultd`.
pub struct Client<R, W> {
    replies: ReplyReader<R>,
    out: W,
    slot: Vec<u8>,
    /// Times requests were sent and their answers awaited (a pipelined batch counts
    /// once): the round trips this connection cost.
    round_trips: u64,
}

fn unexpected(wanted: &'static str, got: &Reply) -> ProtocolError {
    ProtocolError::UnexpectedReply {
        wanted,
        got: format!("{got:?}"),
    }
}

impl<R: Read, W: Write> Client<R, W> {
    /// A client for the server whose `servername` is `slot`.
    pub fn new(reader: R, writer: W, slot: &[u8]) -> Self {
        Client {
            replies: ReplyReader::new(reader),
            out: writer,
            slot: slot.to_vec(),
            round_trips: 0,
        }
    }

    /// Round trips so far: each request sent (or pipelined batch of requests) whose
    /// answer was then awaited counts one.
    pub fn round_trips(&self) -> u64 {
        self.round_trips
    }

    fn send(&mut self, req: &Request) -> Result<(), ProtocolError> {
        self.send_all(&[req])
    }

    /// Send several requests in one write: the server answers them in order (it reads
    /// from a buffered stream, upstream's as ours), so the answers cost one round trip.
    fn send_all(&mut self, reqs: &[&Request]) -> Result<(), ProtocolError> {
        let mut lines = Vec::new();
        for r in reqs {
            lines.extend_from_slice(&encode_request(r)?);
        }
        self.round_trips += 1;
        self.out
            .write_all(&lines)
            .and_then(|()| self.out.flush())
            .map_err(|e| ProtocolError::io("sending request", &e))
    }

    /// Read lines up to the final `DONE`, passing each to `each`; returns the DONE words.
    fn listing(
        &mut self,
        mut each: impl FnMut(Reply) -> Result<(), ProtocolError>,
    ) -> Result<Vec<Vec<u8>>, ProtocolError> {
        loop {
            match self.replies.next_reply()? {
                Reply::Done(words) => return Ok(words),
                other => each(other)?,
            }
        }
    }

    /// `PING`.
    pub fn ping(&mut self) -> Result<(), ProtocolError> {
        self.send(&Request::Ping)?;
        self.replies.expect_ok()?;
        self.listing(|r| Err(unexpected("DONE PING", &r)))?;
        Ok(())
    }

    /// `QUIT`, then the connection is done.
    pub fn quit(mut self) -> Result<(), ProtocolError> {
        self.send(&Request::Quit)?;
        self.replies.expect_ok()
    }

    /// `STARTTLS`: `Ok` once the server said `OK`; the caller does the handshake on
    /// the connection next (and must check [`Client::buffered`] is 0 first).
    pub fn starttls(&mut self) -> Result<(), ProtocolError> {
        self.send(&Request::StartTls {
            slot: self.slot.clone(),
        })?;
        self.replies.expect_ok()
    }

    /// Bytes received and not read yet.
    pub fn buffered(&self) -> usize {
        self.replies.buffered()
    }

    /// `CAPABILITY`: `None` from a stock `backupcyrusd` (it answers `NO bad
    /// command`), else the announced `(name, value)` pairs. `NO iam <servername>` (a
    /// wrong slot) is an error.
    pub fn capabilities(&mut self) -> Result<Option<Vec<Capability>>, ProtocolError> {
        self.send(&Request::Capability {
            slot: self.slot.clone(),
        })?;
        match self.replies.next_reply()? {
            Reply::Ok => {}
            // not "no extensions": the server refuses us (allowlist), or the slot is
            // not its servername (any server, stock or ours, says `iam` then)
            Reply::No(t) if t == b"access denied" || t.starts_with(b"iam ") => {
                return Err(ProtocolError::No(String::from_utf8_lossy(&t).into_owned()));
            }
            Reply::No(_) => return Ok(None),
            other => return Err(unexpected("OK or NO", &other)),
        }
        let mut caps = Vec::new();
        self.listing(|r| match r {
            Reply::Cap { name, value } => {
                caps.push((name, value));
                Ok(())
            }
            other => Err(unexpected("CAP", &other)),
        })?;
        Ok(Some(caps))
    }

    /// `AUTH`, both ways (doc/protocol.md 2.2): send our nonce, answer the server's
    /// with the shared secret, and check the server's proof that it knows the secret
    /// too. `binding` is the TLS exporter's output when the connection runs in TLS
    /// (the server mixes in its own; a relay between two TLS sessions makes them
    /// differ). A proof that does not verify is [`ProtocolError::ServerNotProven`].
    pub fn authenticate(
        &mut self,
        secret: &[u8],
        binding: Option<&[u8; BINDING_LEN]>,
    ) -> Result<(), ProtocolError> {
        let slot = self.slot.clone();
        let mut client_nonce = [0u8; AUTH_LEN];
        getrandom::getrandom(&mut client_nonce).map_err(|e| ProtocolError::Io {
            op: "getting random bytes for the auth nonce",
            kind: std::io::ErrorKind::Other,
            message: e.to_string(),
        })?;
        self.send(&Request::Auth {
            slot: slot.clone(),
            step: AuthStep::Begin(client_nonce),
        })?;
        self.replies.expect_ok()?;
        let mut nonce = None;
        self.listing(|r| match r {
            Reply::Challenge(n) => {
                nonce = Some(n);
                Ok(())
            }
            other => Err(unexpected("CHALLENGE", &other)),
        })?;
        let server_nonce = nonce.ok_or(ProtocolError::MalformedReply {
            what: "auth answer without challenge",
        })?;
        let t = Transcript {
            server_nonce: &server_nonce,
            client_nonce: &client_nonce,
            slot: &slot,
            binding,
        };
        self.send(&Request::Auth {
            slot: slot.clone(),
            step: AuthStep::Answer(client_answer(secret, &t)),
        })?;
        self.replies.expect_ok()?;
        let mut proof = None;
        self.listing(|r| match r {
            Reply::Proof(p) => {
                proof = Some(p);
                Ok(())
            }
            other => Err(unexpected("PROOF", &other)),
        })?;
        match proof {
            Some(p) if verify_server(secret, &t, &p) => Ok(()),
            _ => Err(ProtocolError::ServerNotProven),
        }
    }

    /// `STATUS` (extension): every `(key, value)` line, numbers as decimal text.
    pub fn status(&mut self) -> Result<Vec<(String, String)>, ProtocolError> {
        self.send(&Request::Status {
            slot: self.slot.clone(),
        })?;
        self.replies.expect_ok()?;
        let mut out = Vec::new();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        self.listing(|r| match r {
            Reply::Status { key, value } => {
                out.push((text(&key), value.to_string()));
                Ok(())
            }
            Reply::StatusText { key, value } => {
                out.push((text(&key), text(&value)));
                Ok(())
            }
            other => Err(unexpected("STATUS", &other)),
        })?;
        Ok(out)
    }

    /// `USERS`.
    pub fn users(&mut self) -> Result<Vec<Vec<u8>>, ProtocolError> {
        self.send(&Request::Users {
            slot: self.slot.clone(),
        })?;
        self.replies.expect_ok()?;
        let mut users = Vec::new();
        self.listing(|r| match r {
            Reply::User(u) => {
                users.push(u);
                Ok(())
            }
            other => Err(unexpected("USER", &other)),
        })?;
        Ok(users)
    }

    /// Extension `PARTITIONS`: every partition `(name, path, st_dev)` and every
    /// user's INBOX partition `(userid, partition)`.
    pub fn partitions(&mut self) -> Result<PartitionMap, ProtocolError> {
        self.send(&Request::Partitions {
            slot: self.slot.clone(),
        })?;
        self.replies.expect_ok()?;
        let mut map = PartitionMap::default();
        self.listing(|r| match r {
            Reply::Partition { name, path, dev } => {
                map.partitions.push((name, path, dev));
                Ok(())
            }
            Reply::UserPart { user, partition } => {
                map.users.push((user, partition));
                Ok(())
            }
            other => Err(unexpected("PARTITION or USERPART", &other)),
        })?;
        Ok(map)
    }

    /// Extension `SHARED`: every top-level shared hierarchy.
    pub fn shared(&mut self) -> Result<Vec<SharedOwner>, ProtocolError> {
        self.send(&Request::Shared {
            slot: self.slot.clone(),
        })?;
        self.replies.expect_ok()?;
        let mut out = Vec::new();
        self.listing(|r| match r {
            Reply::Shared {
                owner,
                uniqueid,
                partition,
            } => {
                out.push(SharedOwner {
                    owner,
                    uniqueid,
                    partition,
                });
                Ok(())
            }
            other => Err(unexpected("SHARED", &other)),
        })?;
        Ok(out)
    }

    /// Extension `FDELETED <owner>`: the owner's delayed-delete folders.
    pub fn fdeleted(&mut self, owner: &[u8]) -> Result<Vec<DeletedFolder>, ProtocolError> {
        self.send(&Request::FDeleted {
            slot: self.slot.clone(),
            user: owner.to_vec(),
        })?;
        self.replies.expect_ok()?;
        let mut out = Vec::new();
        self.listing(|r| match r {
            Reply::FDeleted {
                name,
                uniqueid,
                time,
                original,
                internal,
            } => {
                out.push(DeletedFolder {
                    name,
                    uniqueid,
                    time,
                    original,
                    internal,
                });
                Ok(())
            }
            other => Err(unexpected("FDELETED", &other)),
        })?;
        Ok(out)
    }

    fn stats(&mut self, req: Request) -> Result<Listing, ProtocolError> {
        self.send(&req)?;
        self.read_stats()
    }

    /// The answer to a `STAT` listing request already sent.
    fn read_stats(&mut self) -> Result<Listing, ProtocolError> {
        self.replies.expect_ok()?;
        let mut stats = Vec::new();
        let done = self.listing(|r| match r {
            Reply::Stat {
                folder: None,
                name,
                stat,
            } => {
                stats.push((name, stat));
                Ok(())
            }
            other => Err(unexpected("STAT", &other)),
        })?;
        Ok(Listing { files: stats, done })
    }

    /// `META <user>`: the `(name, stat)` of `seen` and `sub`, as far as they exist.
    pub fn meta_listing(&mut self, user: &[u8]) -> Result<Vec<NamedStat>, ProtocolError> {
        let slot = self.slot.clone();
        Ok(self
            .stats(Request::Meta {
                slot,
                user: user.to_vec(),
                items: None,
            })?
            .files)
    }

    /// `FMETA <user> <folder>`: the file stats and the `DONE FMETA` words.
    pub fn fmeta_listing(&mut self, user: &[u8], folder: &[u8]) -> Result<Listing, ProtocolError> {
        let slot = self.slot.clone();
        self.stats(Request::FMeta {
            slot,
            user: user.to_vec(),
            folder: folder.to_vec(),
            items: None,
        })
    }

    /// Extension `USERFILES <user>`: the `(name, stat)` of `seen`, `sub` and each
    /// `sieve/<file>`, as far as they exist.
    pub fn user_files_listing(&mut self, user: &[u8]) -> Result<Vec<NamedStat>, ProtocolError> {
        let slot = self.slot.clone();
        Ok(self
            .stats(Request::UserFiles {
                slot,
                user: user.to_vec(),
                fetch: false,
            })?
            .files)
    }

    /// `FMULTISTATUS <user>` and the listing of the user's own files (`USERFILES`
    /// when `userfiles`, else `META`), and with `quota` the user's quota file
    /// (`META <user> quota`, handed to that receiver), pipelined: one round trip for
    /// everything a backup needs to decide whether the user changed.
    pub fn user_status(
        &mut self,
        user: &[u8],
        userfiles: bool,
        quota: Option<&mut dyn Receiver>,
    ) -> Result<(Vec<FolderStatus>, Vec<NamedStat>), ProtocolError> {
        let slot = self.slot.clone();
        let status = Request::FMultiStatus {
            slot: slot.clone(),
            user: user.to_vec(),
        };
        let files = if userfiles {
            Request::UserFiles {
                slot,
                user: user.to_vec(),
                fetch: false,
            }
        } else {
            Request::Meta {
                slot,
                user: user.to_vec(),
                items: None,
            }
        };
        let quota_req = Request::Meta {
            slot: self.slot.clone(),
            user: user.to_vec(),
            items: Some(vec![b"quota".to_vec()]),
        };
        match quota {
            Some(_) => self.send_all(&[&status, &files, &quota_req])?,
            None => self.send_all(&[&status, &files])?,
        }
        let folders = self.read_fmultistatus();
        // A NO leaves the stream in step and the later answers on their way: read
        // them too. Any other error leaves it out of step: give up at once.
        let folders = match folders {
            Err(e) if !matches!(e, ProtocolError::No(_)) => return Err(e),
            r => r,
        };
        let stats = match self.read_stats() {
            Err(e) if !matches!(e, ProtocolError::No(_)) => return Err(e),
            r => r,
        };
        if let Some(rx) = quota {
            if folders.is_ok() && stats.is_ok() {
                self.read_fetch(rx)?;
            } else {
                self.read_fetch(&mut Collect::default())?;
            }
        }
        Ok((folders?, stats?.files))
    }

    /// `FMULTISTATUS <user>`.
    pub fn fmultistatus(&mut self, user: &[u8]) -> Result<Vec<FolderStatus>, ProtocolError> {
        self.send(&Request::FMultiStatus {
            slot: self.slot.clone(),
            user: user.to_vec(),
        })?;
        self.read_fmultistatus()
    }

    /// The answer to an `FMULTISTATUS` already sent.
    fn read_fmultistatus(&mut self) -> Result<Vec<FolderStatus>, ProtocolError> {
        self.replies.expect_ok()?;
        let mut out: Vec<FolderStatus> = Vec::new();
        self.listing(|r| match r {
            Reply::Folder {
                name,
                uniqueid,
                jmapid,
            } => {
                out.push(FolderStatus {
                    name,
                    uniqueid,
                    jmapid,
                    files: Vec::new(),
                });
                Ok(())
            }
            Reply::Stat {
                folder: Some(f),
                name,
                stat,
            } => match out.last_mut() {
                Some(cur) if cur.name == f => {
                    cur.files.push((name, stat));
                    Ok(())
                }
                _ => Err(ProtocolError::MalformedReply {
                    what: "stat line for a folder not announced just before",
                }),
            },
            other => Err(unexpected("FOLDER or STAT", &other)),
        })?;
        Ok(out)
    }

    /// Send a file-carrying request (`META`/`FMETA` with items, `FDATA`, `SNAPSHOT`),
    /// hand every file to `rx`, and return the final `DONE` words.
    pub fn fetch(
        &mut self,
        req: &Request,
        rx: &mut dyn Receiver,
    ) -> Result<Vec<Vec<u8>>, ProtocolError> {
        self.send(req)?;
        self.read_fetch(rx)
    }

    /// The answer to a `META`/`SNAPSHOT`/`USERFILES FETCH` already sent: files to `rx`;
    /// returns the `DONE` words.
    fn read_fetch(&mut self, rx: &mut dyn Receiver) -> Result<Vec<Vec<u8>>, ProtocolError> {
        self.replies.expect_ok()?;
        loop {
            match self.replies.next_reply()? {
                Reply::Done(words) => return Ok(words),
                Reply::Data(h) => {
                    let sha = {
                        let sink = rx.file(&h)?;
                        self.replies.read_data(&h, sink)?
                    };
                    rx.file_done(&h, &sha)?;
                }
                Reply::No(t) => rx.missing(&t)?,
                other => rx.other(other)?,
            }
        }
    }

    /// `FDATA <user> <folder> <uid>...`: message files; returns the `DONE` words.
    pub fn fdata(
        &mut self,
        user: &[u8],
        folder: &[u8],
        uids: &[u32],
        rx: &mut dyn Receiver,
    ) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let req = Request::FData {
            slot: self.slot.clone(),
            user: user.to_vec(),
            folder: folder.to_vec(),
            items: uids.iter().map(|u| u.to_string().into_bytes()).collect(),
        };
        self.fetch(&req, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::session::tests::{cfg, spool};
    use crate::service::session::{ServiceStats, Session};
    use std::os::unix::net::UnixStream;

    /// Run a client against our session over a socket pair.
    fn with_server<T>(
        secret: Option<&[u8]>,
        f: impl FnOnce(&mut Client<UnixStream, UnixStream>) -> T,
    ) -> T {
        let sp = spool();
        let c = cfg(secret.map(|s| crate::service::Secret::from_bytes(s).unwrap()));
        let stats = ServiceStats::default();
        let (client, mut server) = UnixStream::pair().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut input = server.try_clone().unwrap();
                Session::new(&c, &sp, &stats).run(&mut input, &mut server)
            });
            let mut cl = Client::new(client.try_clone().unwrap(), client, b"imap1");
            f(&mut cl)
        })
    }

    #[test]
    fn listings_and_files() {
        with_server(None, |c| {
            c.ping().unwrap();
            assert_eq!(c.users().unwrap(), [b"bob".to_vec(), b"carol".to_vec()]);
            let meta = c.meta_listing(b"bob").unwrap();
            assert_eq!(meta.len(), 1);
            assert_eq!(meta[0].0, b"seen");
            // pipelined: one round trip for both listings, in step afterwards
            let rt = c.round_trips();
            for userfiles in [false, true] {
                let (folders, files) = c.user_status(b"bob", userfiles, None).unwrap();
                assert_eq!(folders.len(), 2);
                assert_eq!(files[0].0, b"seen");
            }
            assert_eq!(c.round_trips(), rt + 2);
            let files = c.user_files_listing(b"bob").unwrap();
            assert_eq!(files[0], meta[0]);
            assert!(files[1..].iter().all(|(n, _)| n.starts_with(b"sieve/")));
            let folders = c.fmultistatus(b"bob").unwrap();
            assert_eq!(folders.len(), 2);
            assert_eq!(folders[1].name, b"Sent Items");
            assert_eq!(folders[1].files.len(), 4);
            let Listing { files, done } = c.fmeta_listing(b"bob", b"INBOX").unwrap();
            assert_eq!(files.len(), 2);
            assert_eq!(
                done,
                [b"FMETA".to_vec(), b"u-inbox".to_vec(), b"Jinbox".to_vec()]
            );
            let mut rx = Collect::default();
            let done = c.fdata(b"bob", b"INBOX", &[1, 7, 2], &mut rx).unwrap();
            assert_eq!(done[0], b"FDATA");
            assert_eq!(rx.files.len(), 2);
            assert_eq!(rx.files[0].1, b"msg one");
            assert_eq!(rx.files[1].1, b"msg two");
            assert_eq!(rx.missing, [b"no such file 7".to_vec()]);
            let caps = c.capabilities().unwrap().unwrap();
            assert!(caps.iter().any(|(n, _)| n == b"SNAPSHOT"));
            // a missing folder is an error carrying the server's text
            assert_eq!(
                c.fmeta_listing(b"bob", b"Nope").unwrap_err(),
                ProtocolError::No("no such folder user.bob.Nope".into())
            );
        });
    }

    #[test]
    fn authenticate_against_our_session() {
        let secret = b"client-test-secret-0123456789abcdef";
        with_server(Some(secret), |c| {
            assert!(
                matches!(c.users(), Err(ProtocolError::No(t)) if t == "authentication required")
            );
            c.authenticate(secret, None).unwrap();
            assert_eq!(c.users().unwrap().len(), 2);
        });
        with_server(Some(secret), |c| {
            assert_eq!(
                c.authenticate(b"wrong-secret-0123456789abcdefghijk", None),
                Err(ProtocolError::No("authentication failed".into()))
            );
        });
    }

    #[test]
    fn a_server_that_cannot_prove_the_secret_is_refused() {
        // a server that accepts any answer (it does not know the secret) and makes
        // up a proof
        let wire = format!(
            "OK\nCHALLENGE {}\nDONE AUTH\nOK\nPROOF {}\nDONE AUTH\n",
            "11".repeat(32),
            "22".repeat(32)
        );
        let mut c = Client::new(wire.as_bytes(), Vec::new(), b"imap1");
        assert_eq!(
            c.authenticate(b"client-test-secret-0123456789abcdef", None),
            Err(ProtocolError::ServerNotProven)
        );
    }

    #[test]
    fn stock_server_has_no_capabilities() {
        // what backupcyrusd answers to "CAPABILITY <slot>"
        let mut c = Client::new(&b"NO bad command\n"[..], Vec::new(), b"imap1");
        assert_eq!(c.capabilities().unwrap(), None);
        assert_eq!(c.out, b"CAPABILITY imap1\n");
    }

    #[test]
    fn corrupted_payload_is_refused() {
        let wire = b"OK\nDATA 1 3 0 0\nabcDONE 1 0000000000000000000000000000000000000000\nDONE FDATA u j\n";
        let mut c = Client::new(&wire[..], Vec::new(), b"imap1");
        let mut rx = Collect::default();
        assert!(matches!(
            c.fdata(b"bob", b"INBOX", &[1], &mut rx),
            Err(ProtocolError::Sha1Mismatch { .. })
        ));
        assert!(rx.files.is_empty(), "a bad file is never reported done");
    }
}
