//! A connection that may switch from plaintext to TLS in place, and the two halves
//! that read and write it.
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};

use crate::protocol::auth::{BINDING_LEN, EXPORTER_LABEL};

/// The state of one connection.
enum State<S: Read + Write> {
    Plain(S),
    Client(Box<StreamOwned<ClientConnection, S>>),
    Server(Box<StreamOwned<ServerConnection, S>>),
    /// A handshake failed half way: nothing more may be read or written.
    Broken,
}

/// A byte stream, plaintext or TLS.
pub struct Stream<S: Read + Write> {
    state: State<S>,
}

fn broken() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection is unusable after a failed TLS handshake",
    )
}

impl<S: Read + Write> Stream<S> {
    /// A plaintext stream.
    pub fn plain(inner: S) -> Self {
        Stream {
            state: State::Plain(inner),
        }
    }

    /// Whether TLS is on.
    pub fn is_tls(&self) -> bool {
        matches!(self.state, State::Client(_) | State::Server(_))
    }

    /// The plaintext socket underneath.
    pub fn get_ref(&self) -> Option<&S> {
        match &self.state {
            State::Plain(s) => Some(s),
            State::Client(t) => Some(t.get_ref()),
            State::Server(t) => Some(t.get_ref()),
            State::Broken => None,
        }
    }

    fn take_plain(&mut self) -> io::Result<S> {
        match std::mem::replace(&mut self.state, State::Broken) {
            State::Plain(s) => Ok(s),
            other => {
                self.state = other;
                Err(io::Error::other("TLS is already on"))
            }
        }
    }

    /// Client side: handshake now with `name` as the server's expected identity. On
    /// failure (the certificate does not verify, the peer speaks no TLS) the stream
    /// is unusable.
    pub fn start_client(
        &mut self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<()> {
        let sock = self.take_plain()?;
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        self.state = State::Client(Box::new(tls));
        Ok(())
    }

    /// Server side: handshake now.
    pub fn start_server(&mut self, config: Arc<ServerConfig>) -> io::Result<()> {
        let sock = self.take_plain()?;
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        self.state = State::Server(Box::new(tls));
        Ok(())
    }

    /// The channel binding of `AUTH` (protocol::auth): 32 bytes from the TLS
    /// exporter, the same on both ends of one TLS session and different on any
    /// other. None in plaintext.
    pub fn binding(&self) -> Option<[u8; BINDING_LEN]> {
        let out = [0u8; BINDING_LEN];
        match &self.state {
            State::Client(t) => t.conn.export_keying_material(out, EXPORTER_LABEL, None),
            State::Server(t) => t.conn.export_keying_material(out, EXPORTER_LABEL, None),
            _ => return None,
        }
        .ok()
    }

    /// Send TLS's close_notify (a clean end the peer can tell from a cut).
    pub fn close_notify(&mut self) {
        match &mut self.state {
            State::Client(t) => {
                t.conn.send_close_notify();
                let _ = t.flush();
            }
            State::Server(t) => {
                t.conn.send_close_notify();
                let _ = t.flush();
            }
            _ => {}
        }
    }
}

impl<S: Read + Write> Read for Stream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.state {
            State::Plain(s) => s.read(buf),
            State::Client(t) => tls_read(t.as_mut(), buf),
            State::Server(t) => tls_read(t.as_mut(), buf),
            State::Broken => Err(broken()),
        }
    }
}

/// A peer that closes the socket without close_notify ends the stream too: for our
/// protocols every message is framed (lines, counted payloads, SHA-1), so a cut is
/// seen by the framing, and EOF is what the callers handle.
fn tls_read(t: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    match t.read(buf) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        other => other,
    }
}

impl<S: Read + Write> Write for Stream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.state {
            State::Plain(s) => s.write(buf),
            State::Client(t) => t.write(buf),
            State::Server(t) => t.write(buf),
            State::Broken => Err(broken()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.state {
            State::Plain(s) => s.flush(),
            State::Client(t) => t.flush(),
            State::Server(t) => t.flush(),
            State::Broken => Err(broken()),
        }
    }
}

/// One [`Stream`] shared by a reader half and a writer half (the protocol readers
/// and writers each own one). Reads and writes never overlap in time (one thread
/// drives a connection), so the lock is never contended.
pub struct Shared<S: Read + Write> {
    inner: Arc<Mutex<Stream<S>>>,
}

impl<S: Read + Write> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Read + Write> Shared<S> {
    /// Share `stream`.
    pub fn new(stream: Stream<S>) -> Self {
        Shared {
            inner: Arc::new(Mutex::new(stream)),
        }
    }

    /// The stream itself (to switch it to TLS, ask for the binding, ...).
    pub fn lock(&self) -> MutexGuard<'_, Stream<S>> {
        // a panic while holding the lock leaves a stream no one will use again
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A half to read from and write to (both halves are the same stream).
    pub fn half(&self) -> Half<S> {
        Half {
            shared: self.clone(),
        }
    }
}

/// A handle on a [`Shared`] stream that implements `Read` and `Write`.
pub struct Half<S: Read + Write> {
    shared: Shared<S>,
}

impl<S: Read + Write> Read for Half<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.shared.lock().read(buf)
    }
}

impl<S: Read + Write> Write for Half<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.lock().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.shared.lock().flush()
    }
}
