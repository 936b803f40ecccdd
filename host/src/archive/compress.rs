//! Compression of one member, and the choice of how to compress it.
//!
//! Mail bytes are mostly base64 attachments of already-compressed files, where LZ77
//! matching buys nothing and Huffman coding alone gets the same ratio 3-4 times faster;
//! the rest (headers, text bodies, our JSON) compresses 2x better with matching. So the
//! writer keeps two lanes, and each entry goes to the lane its content asks for:
//! [`Lane::Binary`] members are Huffman-only, [`Lane::Text`] members deflate level 4.
//! Measurements are in `doc/archive-format.md`. Any strategy or level gives a plain
//! gzip member that every inflater reads.

use std::io::Write;

use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Method, Status, Strategy};

use super::gzip;

/// How a member is deflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Huffman coding only (zlib's `Z_HUFFMAN_ONLY`): for base64 of compressed data.
    Huffman,
    /// Normal deflate at this level (1-9).
    Deflate(u8),
    /// Stored blocks (level 0): for tests that want big archives fast.
    Store,
}

/// The two kinds of member the writer fills side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Mostly text: deflate with LZ77 matching.
    Text,
    /// Mostly base64 (or other high-entropy) lines: Huffman only.
    Binary,
}

/// How many bytes of a message are sampled to classify it.
const SAMPLE: usize = 4096;
/// How many samples, spread evenly over the message.
const SAMPLES: usize = 8;

/// Classify content by sampling: a line of 60-78 base64 characters is what MIME
/// encoders write for binary parts. More than half such lines makes it binary.
pub fn classify(bytes: &[u8]) -> Lane {
    if bytes.len() < 2 * SAMPLE {
        return if base64_fraction(bytes) > 0.5 {
            Lane::Binary
        } else {
            Lane::Text
        };
    }
    let step = bytes.len() / SAMPLES;
    let mut sum = 0.0;
    for i in 0..SAMPLES {
        let start = i * step;
        let end = (start + SAMPLE).min(bytes.len());
        sum += base64_fraction(&bytes[start..end]);
    }
    if sum / SAMPLES as f64 > 0.5 {
        Lane::Binary
    } else {
        Lane::Text
    }
}

fn base64_fraction(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut n = 0usize;
    for line in bytes.split(|&c| c == b'\n') {
        let l = line.strip_suffix(b"\r").unwrap_or(line);
        if (60..=78).contains(&l.len())
            && l.iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=')
        {
            n += line.len() + 1;
        }
    }
    n as f64 / bytes.len() as f64
}

impl Lane {
    /// The level the writer uses for this lane by default.
    pub fn default_level(self) -> Level {
        match self {
            Lane::Text => Level::Deflate(4),
            Lane::Binary => Level::Huffman,
        }
    }
}

/// Compress `tar` into one complete gzip member (header, deflate, trailer); also
/// returns the CRC-32 of `tar` (the trailer's).
pub(crate) fn gzip_member(tar: &[u8], level: Level) -> (Vec<u8>, u32) {
    let mut out = Vec::with_capacity(tar.len() / 2 + 64);
    // Writing into a Vec cannot fail.
    let (_, crc) = gzip_member_to(&[tar], level, &mut out).unwrap_or((0, 0));
    (out, crc)
}

/// Output chunk of [`gzip_member_to`]: what a member costs in memory beside its input.
const OUT_CHUNK: usize = 256 * 1024;

/// Compress the concatenation of `parts` into one complete gzip member written to
/// `out` in chunks of [`OUT_CHUNK`] (so a member costs its input and one chunk, not a
/// compressed copy as large as its input). Returns the bytes written and the CRC-32 of
/// the input (the trailer's).
pub(crate) fn gzip_member_to(
    parts: &[&[u8]],
    level: Level,
    out: &mut dyn Write,
) -> std::io::Result<(u64, u32)> {
    let (lvl, strategy) = match level {
        Level::Huffman => (1, Strategy::HuffmanOnly),
        Level::Deflate(l) => (i32::from(l.clamp(1, 9)), Strategy::Default),
        Level::Store => (0, Strategy::Default),
    };
    let mut deflate = Deflate::new_with_config(DeflateConfig {
        level: lvl,
        method: Method::Deflated,
        window_bits: -15,
        mem_level: 8,
        strategy,
    });
    let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
    let mut buf = vec![0u8; OUT_CHUNK];
    out.write_all(&gzip::HEADER)?;
    let mut written = gzip::HEADER.len() as u64;
    let mut crc = crc32fast::Hasher::new();
    let last = parts.len().saturating_sub(1);
    for (i, part) in parts.iter().enumerate() {
        crc.update(part);
        let flush = if i == last {
            DeflateFlush::Finish
        } else {
            DeflateFlush::NoFlush
        };
        let mut consumed = 0usize;
        loop {
            let (in0, out0) = (deflate.total_in(), deflate.total_out());
            let status = deflate.compress(&part[consumed..], &mut buf, flush);
            consumed += (deflate.total_in() - in0) as usize;
            let n = (deflate.total_out() - out0) as usize;
            out.write_all(&buf[..n])?;
            written += n as u64;
            match status {
                Ok(Status::StreamEnd) => break,
                // More to do while the input lasts or the output filled the buffer.
                Ok(_) if consumed < part.len() || n == buf.len() => {}
                Ok(_) if flush == DeflateFlush::NoFlush => break,
                Ok(_) => {}
                // Only a broken configuration gives an error; ours is constant.
                Err(e) => panic!("deflate with a fixed valid configuration failed: {e:?}"),
            }
        }
    }
    if parts.is_empty() {
        // An empty member still needs its final block.
        loop {
            let out0 = deflate.total_out();
            let status = deflate.compress(&[], &mut buf, DeflateFlush::Finish);
            let n = (deflate.total_out() - out0) as usize;
            out.write_all(&buf[..n])?;
            written += n as u64;
            match status {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) => panic!("deflate with a fixed valid configuration failed: {e:?}"),
            }
        }
    }
    let crc = crc.finalize();
    out.write_all(&gzip::trailer(crc, total))?;
    written += 8;
    Ok((written, crc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::gzip::{Ended, Input, read_member};

    #[test]
    fn classify_text_and_base64() {
        let text = b"Subject: hi\r\n\r\nHello there, this is a plain text body.\r\n".repeat(200);
        assert_eq!(classify(&text), Lane::Text);
        let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2\r\n";
        let mut b64 = b"Content-Transfer-Encoding: base64\r\n\r\n".to_vec();
        b64.extend(line.repeat(2000));
        assert_eq!(classify(&b64), Lane::Binary);
    }

    #[test]
    fn every_level_round_trips() {
        let data = b"some tar bytes, repeated ".repeat(10_000);
        for level in [
            Level::Huffman,
            Level::Deflate(1),
            Level::Deflate(6),
            Level::Store,
        ] {
            let (member, crc) = gzip_member(&data, level);
            let mut input = Input::new(&member[..], 0);
            let mut got = Vec::new();
            let ended = read_member(&mut input, &mut |c| {
                got.extend_from_slice(c);
                Ok(true)
            })
            .unwrap();
            assert_eq!(
                ended,
                Ended::Complete {
                    len: data.len() as u64,
                    crc32: crc
                }
            );
            assert_eq!(got, data);
            assert_eq!(input.pos, member.len() as u64);
            // The same bytes cut into parts give a member of the same content.
            let cut = data.len() / 3;
            let mut parts = Vec::new();
            let (n, crc2) =
                gzip_member_to(&[&data[..cut], &[], &data[cut..]], level, &mut parts).unwrap();
            assert_eq!((n, crc2), (parts.len() as u64, crc));
            let mut input = Input::new(&parts[..], 0);
            let mut again = Vec::new();
            read_member(&mut input, &mut |c| {
                again.extend_from_slice(c);
                Ok(true)
            })
            .unwrap();
            assert_eq!(again, data);
        }
        let (empty, _) = gzip_member(&[], Level::Deflate(6));
        let mut input = Input::new(&empty[..], 0);
        let ended = read_member(&mut input, &mut |_| Ok(true)).unwrap();
        assert_eq!(ended, Ended::Complete { len: 0, crc32: 0 });
    }
}
