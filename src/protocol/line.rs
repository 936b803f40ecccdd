//! A buffered reader that hands out newline-terminated lines with a hard length bound,
//! and exact byte counts for `DATA` payloads, over any `Read`.
//!
//! Memory use is bounded by the line limit plus one fixed chunk: a longer line is never
//! stored. It is skipped up to its newline and reported as
//! [`ProtocolError::LineTooLong`], so the caller can answer `NO` and carry on with the
//! next line (resynchronisation).
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};

use super::ProtocolError;

const CHUNK: usize = 16 * 1024;

/// One line as read from the wire, without its `\n` (a `\r` before it is kept: upstream
/// treats it as whitespace, see `token::Term`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The bytes before the newline.
    pub bytes: Vec<u8>,
    /// False when the stream ended without a final newline.
    pub terminated: bool,
}

/// Bounded line reader and payload reader over one connection.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    max_line: usize,
    bytes_in: u64,
}

impl<R: Read> LineReader<R> {
    /// A reader that refuses lines longer than `max_line` bytes.
    pub fn new(inner: R, max_line: usize) -> Self {
        LineReader {
            inner,
            buf: vec![0u8; CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            max_line,
            bytes_in: 0,
        }
    }

    /// Bytes read from the connection so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Bytes read from the connection but not handed out yet. Must be 0 where the
    /// transport changes under the reader (STARTTLS): bytes the peer sent ahead of
    /// the TLS handshake would otherwise be taken as if they came through TLS.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whether a whole line is already buffered: the peer pipelined its next request,
    /// so it can be read without waiting on the peer.
    pub fn has_line(&self) -> bool {
        self.buf[self.start..self.end].contains(&b'\n')
    }

    /// Change the line bound (the service uses a tighter one before authentication).
    pub fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line;
    }

    /// Refill the buffer; Ok(false) at end of stream.
    fn fill(&mut self) -> Result<bool, ProtocolError> {
        if self.start < self.end {
            return Ok(true);
        }
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.start = 0;
                    self.end = n;
                    self.bytes_in = self.bytes_in.saturating_add(n as u64);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ProtocolError::io("reading from peer", &e)),
            }
        }
    }

    /// The next line; `Ok(None)` at a clean end of stream (no bytes pending).
    /// A line over the bound is consumed through its newline and returned as
    /// [`ProtocolError::LineTooLong`].
    pub fn read_line(&mut self) -> Result<Option<Line>, ProtocolError> {
        let mut line = Vec::new();
        let mut overlong = false;
        loop {
            if !self.fill()? {
                if overlong {
                    return Err(ProtocolError::LineTooLong {
                        limit: self.max_line,
                    });
                }
                if line.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Line {
                    bytes: line,
                    terminated: false,
                }));
            }
            let avail = &self.buf[self.start..self.end];
            let (take, found) = match avail.iter().position(|&b| b == b'\n') {
                Some(n) => (n, true),
                None => (avail.len(), false),
            };
            if !overlong {
                if line.len().saturating_add(take) > self.max_line {
                    overlong = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(&avail[..take]);
                }
            }
            self.start += take + usize::from(found);
            if found {
                if overlong {
                    return Err(ProtocolError::LineTooLong {
                        limit: self.max_line,
                    });
                }
                return Ok(Some(Line {
                    bytes: line,
                    terminated: true,
                }));
            }
        }
    }

    /// Copy exactly `n` payload bytes to `sink`, feeding each chunk to `inspect` (the
    /// SHA-1 of a `DATA` frame). Fails with `UnexpectedEof` if the stream ends first.
    pub fn copy_exact(
        &mut self,
        n: u64,
        sink: &mut dyn Write,
        inspect: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ProtocolError> {
        let mut left = n;
        while left > 0 {
            if !self.fill()? {
                return Err(ProtocolError::UnexpectedEof {
                    while_: "reading a data payload",
                });
            }
            let avail = self.end - self.start;
            let take = usize::try_from(left).map_or(avail, |l| l.min(avail));
            let chunk = &self.buf[self.start..self.start + take];
            inspect(chunk);
            sink.write_all(chunk)
                .map_err(|e| ProtocolError::io("writing a data payload", &e))?;
            self.start += take;
            left -= take as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most `step` bytes per read (tar-rs's RandomReader idea).
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn lines(input: &[u8], max: usize, step: usize) -> Vec<Result<Line, ProtocolError>> {
        let mut r = LineReader::new(Trickle { data: input, step }, max);
        let mut out = Vec::new();
        loop {
            match r.read_line() {
                Ok(None) => return out,
                Ok(Some(l)) => out.push(Ok(l)),
                Err(e) => out.push(Err(e)),
            }
        }
    }

    fn ok(b: &[u8], terminated: bool) -> Result<Line, ProtocolError> {
        Ok(Line {
            bytes: b.to_vec(),
            terminated,
        })
    }

    #[test]
    fn splits_lines_and_keeps_cr() {
        for step in [1, 2, 7, 1000] {
            let got = lines(b"PING\nQUIT\r\n\nlast", 10, step);
            assert_eq!(
                got,
                vec![
                    ok(b"PING", true),
                    ok(b"QUIT\r", true),
                    ok(b"", true),
                    ok(b"last", false)
                ]
            );
        }
    }

    #[test]
    fn overlong_line_is_skipped_and_reader_resyncs() {
        for step in [1, 3, 64] {
            let got = lines(b"12345\n123456\nok\n1234567890123", 5, step);
            assert_eq!(
                got,
                vec![
                    ok(b"12345", true),
                    Err(ProtocolError::LineTooLong { limit: 5 }),
                    ok(b"ok", true),
                    Err(ProtocolError::LineTooLong { limit: 5 }),
                ]
            );
        }
    }

    #[test]
    fn huge_line_does_not_allocate_past_the_bound() {
        let mut big = vec![b'a'; 5 * CHUNK];
        big.extend_from_slice(b"\nPING\n");
        let got = lines(&big, 100, 4096);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], ok(b"PING", true));
    }

    #[test]
    fn payload_then_line() {
        let mut r = LineReader::new(
            Trickle {
                data: b"DATA x 3 0 0\nabcDONE x y\n",
                step: 2,
            },
            64,
        );
        assert_eq!(r.read_line().unwrap().unwrap().bytes, b"DATA x 3 0 0");
        let mut sink = Vec::new();
        let mut seen = 0usize;
        r.copy_exact(3, &mut sink, &mut |c| seen += c.len())
            .unwrap();
        assert_eq!((sink.as_slice(), seen), (&b"abc"[..], 3));
        assert_eq!(r.read_line().unwrap().unwrap().bytes, b"DONE x y");
        assert_eq!(
            r.copy_exact(1, &mut Vec::new(), &mut |_| {}),
            Err(ProtocolError::UnexpectedEof {
                while_: "reading a data payload"
            })
        );
        assert_eq!(r.bytes_in(), 25);
    }
}
