//! Unit tests of reply writing and reading, including SHA-1 framing failures.

use super::*;

fn written(f: impl FnOnce(&mut ReplyWriter<&mut Vec<u8>>) -> Result<(), ProtocolError>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = ReplyWriter::new(&mut out);
    f(&mut w).unwrap();
    out
}

#[test]
fn lines_are_byte_exact() {
    let st = FileStat {
        size: 5,
        mtime: 1_700_000_000,
        ino: 42,
    };
    let out = written(|w| {
        w.ok()?;
        w.user(b"bob@example.com")?;
        w.folder(b"Sent Items", b"9d5c1b5e-uid", b"Jabc")?;
        w.stat(Some(b"Sent Items"), b"header", st)?;
        w.stat(None, b"seen", st)?;
        w.no_name("no such file", b"17")?;
        w.no(b"iam imap1")?;
        w.done("FDATA", &[b"u-1", b"J x"])?;
        w.done("USERS", &[])
    });
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "OK\n\
         USER bob%40example.com\n\
         FOLDER Sent%20Items 9d5c1b5e-uid Jabc\n\
         STAT Sent%20Items header 5 1700000000 42\n\
         STAT seen 5 1700000000 42\n\
         NO no such file 17\n\
         NO iam imap1\n\
         DONE FDATA u-1 J%20x\n\
         DONE USERS\n"
    );
}

#[test]
fn data_frame_carries_sha1_of_payload() {
    let st = FileStat {
        size: 3,
        mtime: 7,
        ino: 8,
    };
    let out = written(|w| w.data(b"1", st, &mut &b"abc"[..]).map(|_| ()));
    // sha1("abc")
    assert_eq!(
        out,
        b"DATA 1 3 7 8\nabcDONE 1 a9993e364706816aba3e25717850c26c9cd0d89d\n"
    );
}

#[test]
fn short_source_is_an_error() {
    let mut out = Vec::new();
    let mut w = ReplyWriter::new(&mut out);
    let st = FileStat {
        size: 10,
        mtime: 0,
        ino: 0,
    };
    assert_eq!(
        w.data(b"x", st, &mut &b"abc"[..]),
        Err(ProtocolError::ShortSource {
            name: "x".into(),
            announced: 10,
            got: 3
        })
    );
}

#[test]
fn reader_round_trip_and_verification() {
    let st = FileStat {
        size: 3,
        mtime: 7,
        ino: 8,
    };
    let wire = written(|w| {
        w.ok()?;
        w.data(b"index", st, &mut &b"abc"[..])?;
        w.done("FMETA", &[b"uid", b"jid"])
    });
    let mut r = ReplyReader::new(&wire[..]);
    r.expect_ok().unwrap();
    let Reply::Data(h) = r.next_reply().unwrap() else {
        panic!("wanted data")
    };
    assert_eq!((h.name.as_slice(), h.stat), (&b"index"[..], st));
    let mut sink = Vec::new();
    r.read_data(&h, &mut sink).unwrap();
    assert_eq!(sink, b"abc");
    assert_eq!(
        r.next_reply().unwrap(),
        Reply::Done(vec![b"FMETA".to_vec(), b"uid".to_vec(), b"jid".to_vec()])
    );
    assert!(matches!(
        r.next_reply(),
        Err(ProtocolError::UnexpectedEof { .. })
    ));

    // one flipped payload byte: the SHA-1 check fails
    let mut bad = wire.clone();
    let at = bad.windows(3).position(|w| w == b"abc").unwrap();
    bad[at] = b'x';
    let mut r = ReplyReader::new(&bad[..]);
    r.expect_ok().unwrap();
    let Reply::Data(h) = r.next_reply().unwrap() else {
        panic!("wanted data")
    };
    assert!(matches!(
        r.read_data(&h, &mut Vec::new()),
        Err(ProtocolError::Sha1Mismatch { .. })
    ));

    // truncated payload
    let mut r = ReplyReader::new(&wire[..wire.len() - 60]);
    r.expect_ok().unwrap();
    let Reply::Data(h) = r.next_reply().unwrap() else {
        panic!("wanted data")
    };
    assert!(r.read_data(&h, &mut Vec::new()).is_err());
}

#[test]
fn parse_reply_shapes() {
    assert_eq!(parse_reply(b"OK").unwrap(), Reply::Ok);
    assert_eq!(
        parse_reply(b"NO iam imap1").unwrap(),
        Reply::No(b"iam imap1".to_vec())
    );
    assert_eq!(
        parse_reply(b"STAT seen 1 2 3").unwrap(),
        Reply::Stat {
            folder: None,
            name: b"seen".to_vec(),
            stat: FileStat {
                size: 1,
                mtime: 2,
                ino: 3
            }
        }
    );
    assert!(matches!(
        parse_reply(b"STAT a%2Eb index 1 2 3").unwrap(),
        Reply::Stat { folder: Some(f), .. } if f == b"a.b"
    ));
    assert!(parse_reply(b"STAT seen x 2 3").is_err());
    assert!(parse_reply(b"WHAT").is_err());
    assert!(parse_reply(b"OK extra").is_err());
    assert_eq!(
        parse_reply(b"STATUS sessions 4").unwrap(),
        Reply::Status {
            key: b"sessions".to_vec(),
            value: 4
        }
    );
    // the two listings of issue 9, written and read back
    let w = written(|w| {
        w.shared(b"%shared", b"u1", b"p1")?;
        w.fdeleted(
            b"INBOX/..",
            b"u2",
            1_700_000_000,
            b"INBOX/Old",
            b"user.bob.^^",
        )
    });
    let lines: Vec<Reply> = w
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| parse_reply(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            Reply::Shared {
                owner: b"%shared".to_vec(),
                uniqueid: b"u1".to_vec(),
                partition: b"p1".to_vec()
            },
            Reply::FDeleted {
                name: b"INBOX/..".to_vec(),
                uniqueid: b"u2".to_vec(),
                time: 1_700_000_000,
                original: b"INBOX/Old".to_vec(),
                internal: b"user.bob.^^".to_vec()
            }
        ]
    );
    assert!(parse_reply(b"FDELETED a u x o i").is_err());
    let ch = format!("CHALLENGE {}", "0f".repeat(32));
    assert_eq!(
        parse_reply(ch.as_bytes()).unwrap(),
        Reply::Challenge([0x0f; 32])
    );
    let pr = format!("PROOF {}", "a0".repeat(32));
    assert_eq!(
        parse_reply(pr.as_bytes()).unwrap(),
        Reply::Proof([0xa0; 32])
    );
    assert!(parse_reply(b"PROOF 12").is_err());
}

#[test]
fn parse_reply_never_panics() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(11);
    let vocab: &[&[u8]] = &[
        b"OK",
        b"NO",
        b"DONE",
        b"STAT",
        b"DATA",
        b"USER",
        b"FOLDER",
        b"CAP",
        b"CHALLENGE",
        b"STATUS",
        b"1",
        b"%",
        b"%FFFFFF",
        b" ",
    ];
    for _ in 0..50_000 {
        let mut line = Vec::new();
        for _ in 0..rng.gen_range(0..7) {
            if rng.gen_bool(0.7) {
                line.extend_from_slice(vocab[rng.gen_range(0..vocab.len())]);
            } else {
                line.push(rng.r#gen::<u8>());
            }
            line.push(b' ');
        }
        line.pop();
        let _ = parse_reply(&line);
    }
}

#[test]
fn synthetic_inode_is_little_endian_u16() {
    let mut sha = [0u8; 20];
    sha[0] = 0x34;
    sha[1] = 0x12;
    assert_eq!(synthetic_ino(&sha), 0x1234);
}
