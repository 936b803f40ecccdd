//! A seeded generator of realistic RFC 5322 messages for loading a sandbox.
//!
//! The same seed gives the same messages (with the `rand` version in Cargo.lock).
//! Messages use CRLF line ends, carry Date, Message-ID, From, To and Subject (about
//! one subject in four RFC 2047 encoded), and come in sizes from about 1 KB to
//! several MB drawn log-uniformly from size bands, mostly small: small ones are
//! text/plain, larger ones multipart/mixed with base64 attachments of random (so
//! incompressible) bytes. See `doc/sandbox.md`.
#![forbid(unsafe_code)]

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use cyrvault::time;
use cyrvault_host::imap::base64;

/// A generated message.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The message bytes (CRLF line ends, ASCII only).
    pub bytes: Vec<u8>,
    /// The Date header as Unix seconds (a good internal date for it).
    pub date: i64,
    /// The Message-ID without angle brackets.
    pub message_id: String,
    /// The subject before any RFC 2047 encoding.
    pub subject: String,
}

/// The generator. Sizes are capped at `max_size` (default 6 MiB).
pub struct MailGen {
    rng: StdRng,
    seq: u64,
    max_size: usize,
}

/// Size bands: (weight in percent, low, high), drawn log-uniformly inside a band.
const BANDS: [(u32, f64, f64); 4] = [
    (75, 1_000.0, 16_000.0),
    (18, 16_000.0, 256_000.0),
    (6, 256_000.0, 2_000_000.0),
    (1, 2_000_000.0, 6_000_000.0),
];

const WORDS: &[&str] = &[
    "the",
    "backup",
    "mailbox",
    "server",
    "quarterly",
    "report",
    "meeting",
    "lunch",
    "please",
    "review",
    "attached",
    "invoice",
    "project",
    "deadline",
    "thanks",
    "regards",
    "index",
    "spool",
    "partition",
    "restore",
    "archive",
    "weekend",
    "budget",
    "draft",
    "release",
    "schedule",
    "question",
    "answer",
    "update",
    "notes",
    "migration",
    "customer",
    "ticket",
    "urgent",
    "soon",
];
const NAMES: &[(&str, &str)] = &[
    ("Alice Example", "alice@example.org"),
    ("Bob Builder", "bob@example.net"),
    ("Carol Ng", "carol@corp.example"),
    ("Dmitri Ivanov", "dmitri@example.ru"),
    ("Erika Müller", "erika@example.de"),
    ("Fatima Zahra", "fatima@example.ma"),
    ("Gao Wei", "gao@example.cn"),
];
const UNICODE_SUBJECTS: &[&str] = &[
    "Grüße aus München",
    "Réunion de l'équipe",
    "Отчёт за квартал",
    "会議の議事録",
    "¿Dónde está el informe?",
];

/// RFC 5322 date text for Unix seconds in zone `tz_minutes` east of UTC.
pub fn rfc5322_date(unix: i64, tz_minutes: i32) -> String {
    let internal = cyrvault_host::imap::format_internaldate(unix, tz_minutes);
    // "dd-Mon-yyyy hh:mm:ss +zzzz" -> "Www, dd Mon yyyy hh:mm:ss +zzzz"
    let (local_days, _) = time::split_unix(unix + i64::from(tz_minutes) * 60);
    let dow = time::weekday(local_days);
    let (date, rest) = internal.split_once(' ').unwrap_or((&internal, ""));
    let parts: Vec<&str> = date.split('-').collect();
    match parts.as_slice() {
        [d, m, y] if time::MONTHS.contains(m) => format!("{dow}, {d} {m} {y} {rest}"),
        _ => internal.clone(),
    }
}

/// RFC 2047 B-encoding of a UTF-8 phrase.
fn encoded_word(s: &str) -> String {
    format!("=?UTF-8?B?{}?=", base64(s.as_bytes()))
}

/// Base64 with 76-character lines and CRLF, as MIME bodies need.
fn base64_lines(bytes: &[u8]) -> String {
    let flat = base64(bytes);
    let mut out = String::with_capacity(flat.len() + flat.len() / 38 + 2);
    for chunk in flat.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

impl MailGen {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> MailGen {
        MailGen {
            rng: StdRng::seed_from_u64(seed),
            seq: 0,
            max_size: 6 * 1024 * 1024,
        }
    }

    /// Cap message sizes (at least 1 KB).
    pub fn with_max_size(mut self, max: usize) -> MailGen {
        self.max_size = max.max(1024);
        self
    }

    /// A random integer in `lo..hi` (for callers that want to vary things with the
    /// same seed).
    pub fn below(&mut self, hi: usize) -> usize {
        if hi == 0 {
            0
        } else {
            self.rng.gen_range(0..hi)
        }
    }

    /// Draw a target size from the band mix.
    pub fn next_size(&mut self) -> usize {
        let mut pick = self.rng.gen_range(0..100u32);
        let mut band = BANDS[0];
        for b in BANDS {
            if pick < b.0 {
                band = b;
                break;
            }
            pick -= b.0;
        }
        let (lo, hi) = (band.1.ln(), band.2.ln());
        let size = self.rng.gen_range(lo..hi).exp() as usize;
        size.clamp(1000, self.max_size)
    }

    fn sentence(&mut self, words: usize) -> String {
        let mut s = String::new();
        for i in 0..words {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(WORDS[self.rng.gen_range(0..WORDS.len())]);
        }
        s
    }

    /// Text of about `len` bytes in CRLF lines of at most 72 characters.
    fn text(&mut self, len: usize) -> String {
        let mut out = String::with_capacity(len + 80);
        let mut line = String::new();
        while out.len() + line.len() < len {
            let w = WORDS[self.rng.gen_range(0..WORDS.len())];
            if line.len() + w.len() + 1 > 72 {
                out.push_str(&line);
                out.push_str("\r\n");
                line.clear();
                if self.rng.gen_ratio(1, 8) {
                    out.push_str("\r\n");
                }
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(w);
        }
        out.push_str(&line);
        out.push_str("\r\n");
        // A line starting with "." exercises LMTP dot-stuffing.
        if self.rng.gen_ratio(1, 4) {
            out.push_str(".signature follows\r\n-- \r\nsent by mailgen\r\n");
        }
        out
    }

    /// A message of a size drawn from the band mix.
    pub fn message(&mut self) -> Mail {
        let size = self.next_size();
        self.message_of_size(size)
    }

    /// A message of roughly `target` bytes (within a few hundred bytes, never
    /// below what the headers need).
    pub fn message_of_size(&mut self, target: usize) -> Mail {
        self.seq += 1;
        // Dates spread over 2019-2024 from a fixed epoch, so output is reproducible.
        let date = 1_546_300_800 + self.rng.gen_range(0..6 * 365 * 86400i64);
        let tz = [0, 60, 120, -300, -420, 330, 540][self.rng.gen_range(0..7)];
        let from = NAMES[self.rng.gen_range(0..NAMES.len())];
        let to = NAMES[self.rng.gen_range(0..NAMES.len())];
        let message_id = format!("{}.{:08x}@mailgen.example", self.seq, self.rng.next_u32());
        let unicode = self.rng.gen_ratio(1, 4);
        let subject = if unicode {
            UNICODE_SUBJECTS[self.rng.gen_range(0..UNICODE_SUBJECTS.len())].to_string()
        } else {
            let n = self.rng.gen_range(2..8);
            let mut s = self.sentence(n);
            if let Some(c) = s.get_mut(0..1) {
                c.make_ascii_uppercase();
            }
            s
        };
        let subject_hdr = if unicode {
            encoded_word(&subject)
        } else {
            subject.clone()
        };
        let from_hdr = if from.0.is_ascii() {
            format!("\"{}\" <{}>", from.0, from.1)
        } else {
            format!("{} <{}>", encoded_word(from.0), from.1)
        };
        let mut h = String::new();
        h.push_str(&format!("Date: {}\r\n", rfc5322_date(date, tz)));
        h.push_str(&format!("Message-ID: <{message_id}>\r\n"));
        h.push_str(&format!("From: {from_hdr}\r\n"));
        h.push_str(&format!("To: {} <{}>\r\n", to.0.replace('ü', "ue"), to.1));
        h.push_str(&format!("Subject: {subject_hdr}\r\n"));
        if self.seq > 1 && self.rng.gen_ratio(1, 3) {
            h.push_str(&format!(
                "In-Reply-To: <{}.{:08x}@mailgen.example>\r\n",
                self.rng.gen_range(1..self.seq),
                self.rng.next_u32()
            ));
        }
        h.push_str("MIME-Version: 1.0\r\n");
        let budget = target.saturating_sub(h.len() + 200);
        let body = if target < 4000 || self.rng.gen_ratio(1, 5) && target < 64_000 {
            h.push_str("Content-Type: text/plain; charset=us-ascii\r\n");
            h.push_str("Content-Transfer-Encoding: 7bit\r\n");
            self.text(budget.max(40))
        } else {
            let boundary = format!("=_mailgen_{:016x}", self.rng.next_u64());
            h.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n"
            ));
            let text_len = (budget / 10).clamp(200, 16_000);
            let mut b = String::from("This is a multi-part message in MIME format.\r\n");
            b.push_str(&format!(
                "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            ));
            b.push_str(&self.text(text_len));
            let parts = if budget > 100_000 {
                self.rng.gen_range(1..4)
            } else {
                1
            };
            // base64 grows by 4/3 plus line ends: raw = encoded * 57/78 roughly.
            let encoded_total = budget.saturating_sub(b.len() + parts * 200);
            for i in 0..parts {
                let raw_len = (encoded_total / parts) * 57 / 78;
                let mut raw = vec![0u8; raw_len.max(16)];
                self.rng.fill_bytes(&mut raw);
                let (ctype, name) = match i % 3 {
                    0 => ("application/pdf", "report.pdf"),
                    1 => ("image/jpeg", "photo.jpg"),
                    _ => ("application/octet-stream", "data.bin"),
                };
                b.push_str(&format!(
                    "--{boundary}\r\nContent-Type: {ctype}; name=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n"
                ));
                b.push_str(&base64_lines(&raw));
            }
            b.push_str(&format!("--{boundary}--\r\n"));
            b
        };
        h.push_str("\r\n");
        let mut bytes = h.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        Mail {
            bytes,
            date,
            message_id,
            subject,
        }
    }
}

/// Convert bare LF (and bare CR) line ends to CRLF, as Cyrus itself would on APPEND;
/// doing it first keeps the stored bytes equal to what we sent.
pub fn to_crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 30);
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        match b {
            b'\r' if input.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_messages() {
        let mut a = MailGen::new(7);
        let mut b = MailGen::new(7);
        for _ in 0..20 {
            assert_eq!(a.message().bytes, b.message().bytes);
        }
        assert_ne!(
            MailGen::new(8).message().bytes,
            MailGen::new(7).message().bytes
        );
    }

    #[test]
    fn messages_are_crlf_ascii_and_near_target() {
        let mut g = MailGen::new(1);
        for target in [1000, 3000, 20_000, 300_000, 3_000_000] {
            let m = g.message_of_size(target);
            assert!(m.bytes.is_ascii());
            assert_eq!(to_crlf(&m.bytes), m.bytes, "only CRLF line ends");
            let head = String::from_utf8_lossy(&m.bytes[..m.bytes.len().min(2000)]).into_owned();
            for h in [
                "Date: ",
                "Message-ID: <",
                "From: ",
                "To: ",
                "Subject: ",
                "MIME-Version: 1.0",
            ] {
                assert!(head.contains(h), "{h} missing in {head}");
            }
            let len = m.bytes.len() as f64;
            assert!(
                len > target as f64 * 0.8 && len < target as f64 * 1.2 + 800.0,
                "target {target} got {len}"
            );
        }
    }

    #[test]
    fn size_mix_is_mostly_small_with_a_long_tail() {
        let mut g = MailGen::new(42);
        let sizes: Vec<usize> = (0..2000).map(|_| g.next_size()).collect();
        let small = sizes.iter().filter(|&&s| s < 16_000).count();
        assert!(small > 1300 && small < 1700, "{small}");
        assert!(sizes.iter().any(|&s| s > 2_000_000));
        assert!(sizes.iter().all(|&s| (1000..=6 * 1024 * 1024).contains(&s)));
        let mut capped = MailGen::new(42).with_max_size(50_000);
        assert!((0..500).all(|_| capped.next_size() <= 50_000));
    }

    #[test]
    fn dates_and_encoded_words() {
        assert_eq!(rfc5322_date(0, 0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1577869200, 60),
            "Wed, 01 Jan 2020 10:00:00 +0100"
        );
        assert_eq!(encoded_word("Grüße"), "=?UTF-8?B?R3LDvMOfZQ==?=");
        let mut g = MailGen::new(3);
        let encoded = (0..100)
            .filter(|_| {
                String::from_utf8_lossy(&g.message_of_size(1500).bytes)
                    .contains("Subject: =?UTF-8?B?")
            })
            .count();
        assert!(encoded > 10 && encoded < 50, "{encoded}");
    }

    #[test]
    fn crlf_conversion() {
        assert_eq!(to_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
        assert_eq!(to_crlf(b"\r\n\n"), b"\r\n\r\n");
    }
}
