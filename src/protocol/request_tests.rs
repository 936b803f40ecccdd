//! Unit tests of request parsing and encoding, including a seeded fuzz.
//! Expected outcomes are derived from `cmdloop`/`do_*` in Cyrus 3.13's
//! `imap/backupcyrusd.c` (see doc/protocol.md for the walk-through).

use super::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn p(line: &[u8]) -> Request {
    parse_request(line).unwrap()
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn refused(slot: &str, command: &str, refusal: Refusal) -> Request {
    Request::Refused {
        slot: v(slot),
        command: v(command),
        refusal,
    }
}

#[test]
fn quit_and_ping_ignore_the_rest_and_case() {
    assert_eq!(p(b"quit now please"), Request::Quit);
    assert_eq!(p(b"PiNg"), Request::Ping);
    assert_eq!(p(b"PING\r"), Request::Ping);
    // C string compare stops at the NUL
    assert_eq!(p(b"PING\0junk"), Request::Ping);
}

#[test]
fn base_commands() {
    assert_eq!(p(b"USERS srv"), Request::Users { slot: v("srv") });
    assert_eq!(p(b"users srv trailing"), Request::Users { slot: v("srv") });
    assert_eq!(
        p(b"META srv bob"),
        Request::Meta {
            slot: v("srv"),
            user: v("bob"),
            items: None
        }
    );
    assert_eq!(
        p(b"META srv bob seen sub\r"),
        Request::Meta {
            slot: v("srv"),
            user: v("bob"),
            items: Some(vec![v("seen"), v("sub")])
        }
    );
    assert_eq!(
        p(b"FMULTISTATUS srv bob%40example.com"),
        Request::FMultiStatus {
            slot: v("srv"),
            user: v("bob@example.com")
        }
    );
    assert_eq!(
        p(b"FMETA srv bob Sent%20Items header index"),
        Request::FMeta {
            slot: v("srv"),
            user: v("bob"),
            folder: v("Sent Items"),
            items: Some(vec![v("header"), v("index")])
        }
    );
    assert_eq!(
        p(b"FMETA srv bob INBOX"),
        Request::FMeta {
            slot: v("srv"),
            user: v("bob"),
            folder: v("INBOX"),
            items: None
        }
    );
    assert_eq!(
        p(b"FDATA srv bob INBOX 1 2 3"),
        Request::FData {
            slot: v("srv"),
            user: v("bob"),
            folder: v("INBOX"),
            items: vec![v("1"), v("2"), v("3")]
        }
    );
    // quoted astrings are accepted as upstream's getastring does
    assert_eq!(
        p(br#"FDATA srv "bob" "a b" 1"#),
        Request::FData {
            slot: v("srv"),
            user: v("bob"),
            folder: v("a b"),
            items: vec![v("1")]
        }
    );
}

#[test]
fn upstream_refusals() {
    assert_eq!(p(b"META srv"), refused("srv", "META", Refusal::BadCommand));
    assert_eq!(
        p(b"META srv\tbob"),
        refused("srv", "META", Refusal::BadCommand)
    );
    assert_eq!(
        p(b"NOPE srv x"),
        refused("srv", "NOPE", Refusal::Unknown(v("NOPE")))
    );
    assert_eq!(p(b"NOPE srv"), refused("srv", "NOPE", Refusal::BadCommand));
    // a one-word line: the slot is empty (upstream would read the next line)
    assert_eq!(p(b"META"), refused("", "META", Refusal::BadCommand));
    assert_eq!(
        p(b"FMETA srv bob"),
        refused("srv", "FMETA", Refusal::MissingUser)
    );
    assert_eq!(
        p(b"FDATA srv bob"),
        refused("srv", "FDATA", Refusal::MissingUser)
    );
    // double space: the astring fails, upstream says nothing at all
    assert_eq!(p(b"META srv  bob"), refused("srv", "META", Refusal::Silent));
    assert_eq!(
        p(b"FMULTISTATUS srv "),
        refused("srv", "FMULTISTATUS", Refusal::Silent)
    );
    assert_eq!(
        p(b"FDATA srv  bob"),
        refused("srv", "FDATA", Refusal::MissingUser)
    );
    assert_eq!(
        p(b"FMETA srv {3}"),
        refused("srv", "FMETA", Refusal::Literal)
    );
    // a last line without newline: EOF instead of '\n'
    assert_eq!(
        parse_request_line(b"FMETA srv bob", false).unwrap(),
        refused("srv", "FMETA", Refusal::Silent)
    );
}

#[test]
fn fdata_with_failed_folder_astring_is_an_empty_folder() {
    assert_eq!(
        p(b"FDATA srv bob  1"),
        Request::FData {
            slot: v("srv"),
            user: v("bob"),
            folder: vec![],
            items: vec![]
        }
    );
}

#[test]
fn name_validation() {
    let inv = |what, reason| Refusal::Invalid(ProtocolError::InvalidName { what, reason });
    assert_eq!(
        p(b"META srv ..%2Fetc"),
        refused("srv", "META", inv("user", "contains '/'"))
    );
    // Cyrus (unixhierarchysep) accepts userids `a..b`, `.x`, even `..`: they are data;
    // the path layer checks every component it builds (issue 9)
    for u in ["a..b", ".x", ".."] {
        assert_eq!(
            p(format!("META srv {u}").as_bytes()),
            Request::Meta {
                slot: b"srv".to_vec(),
                user: u.as_bytes().to_vec(),
                items: None
            }
        );
    }
    assert_eq!(
        p(b"META srv bob%00x"),
        refused("srv", "META", inv("user", "contains a nul byte"))
    );
    assert_eq!(
        p(b"META srv bob%0A"),
        refused("srv", "META", inv("user", "contains a control character"))
    );
    // a folder name is data, never a path: Cyrus accepts `INBOX/..` (issue 9)
    assert_eq!(
        p(b"FMETA srv bob a/../b"),
        Request::FMeta {
            slot: b"srv".to_vec(),
            user: b"bob".to_vec(),
            folder: b"a/../b".to_vec(),
            items: None
        }
    );
    let long = format!("META srv {}", "u".repeat(MAX_USER + 1));
    assert_eq!(
        p(long.as_bytes()),
        refused(
            "srv",
            "META",
            Refusal::Invalid(ProtocolError::TokenTooLong {
                what: "user",
                limit: MAX_USER
            })
        )
    );
    // a folder with '/' separators and dots inside names is fine
    assert!(matches!(
        p(b"FMETA srv bob Archive%2F2024%2Fa.b"),
        Request::FMeta { .. }
    ));
    let many = format!("FDATA srv bob INBOX{}", " 1".repeat(MAX_ITEMS + 1));
    assert_eq!(
        p(many.as_bytes()),
        refused(
            "srv",
            "FDATA",
            Refusal::Invalid(ProtocolError::TooManyItems { limit: MAX_ITEMS })
        )
    );
    assert!(matches!(
        parse_request(&vec![b'x'; MAX_TOKEN + 1]),
        Err(ProtocolError::TokenTooLong {
            what: "command",
            ..
        })
    ));
}

#[test]
fn extensions() {
    assert_eq!(p(b"CAPABILITY srv"), Request::Capability { slot: v("srv") });
    assert_eq!(p(b"status srv"), Request::Status { slot: v("srv") });
    let hexed = "ab".repeat(32);
    assert_eq!(
        p(format!("AUTH srv BEGIN {hexed}").as_bytes()),
        Request::Auth {
            slot: v("srv"),
            step: AuthStep::Begin([0xab; 32])
        }
    );
    // the client's nonce is required (mutual authentication)
    assert!(matches!(
        p(b"AUTH srv BEGIN"),
        Request::Refused {
            refusal: Refusal::Invalid(ProtocolError::BadArgument {
                reason: "missing client nonce",
                ..
            }),
            ..
        }
    ));
    assert_eq!(p(b"starttls srv"), Request::StartTls { slot: v("srv") });
    assert!(p(b"STARTTLS srv").allowed_before_auth());
    assert_eq!(
        p(format!("AUTH srv ANSWER {hexed}").as_bytes()),
        Request::Auth {
            slot: v("srv"),
            step: AuthStep::Answer([0xab; 32])
        }
    );
    assert!(matches!(
        p(b"AUTH srv ANSWER 12"),
        Request::Refused {
            refusal: Refusal::Invalid(ProtocolError::BadArgument { .. }),
            ..
        }
    ));
    assert!(p(b"AUTH srv ANSWER 12").allowed_before_auth());
    assert!(!p(b"USERS srv").allowed_before_auth());
    assert_eq!(
        p(b"SNAPSHOT srv bob"),
        Request::Snapshot {
            slot: v("srv"),
            user: v("bob")
        }
    );
    for (line, fetch) in [
        (&b"USERFILES srv bob"[..], false),
        (b"USERFILES srv bob FETCH", true),
    ] {
        let r = p(line);
        assert_eq!(
            r,
            Request::UserFiles {
                slot: v("srv"),
                user: v("bob"),
                fetch
            }
        );
        assert_eq!(encode_request(&r).unwrap(), [line, b"\n"].concat());
    }
    assert!(matches!(
        p(b"USERFILES srv bob ALL"),
        Request::Refused {
            refusal: Refusal::Invalid(ProtocolError::BadArgument { .. }),
            ..
        }
    ));
    assert!(matches!(
        p(b"USERFILES srv ../x"),
        Request::Refused {
            refusal: Refusal::Invalid(ProtocolError::InvalidName { .. }),
            ..
        }
    ));
}

#[test]
fn encode_is_what_the_perl_client_sends() {
    let r = Request::FMeta {
        slot: v("imap1.example.com"),
        user: v("bob@example.com"),
        folder: v("Sent Items"),
        items: Some(vec![v("header"), v("index")]),
    };
    assert_eq!(
        encode_request(&r).unwrap(),
        b"FMETA imap1.example.com bob%40example.com Sent%20Items header index\n"
    );
    assert_eq!(encode_request(&Request::Ping).unwrap(), b"PING\n");
    assert_eq!(
        encode_request(&refused("s", "X", Refusal::BadCommand)),
        Err(ProtocolError::NotEncodable)
    );
}

/// Words that steer the parser into its interesting branches.
const VOCAB: &[&[u8]] = &[
    b"QUIT",
    b"PING",
    b"USERS",
    b"META",
    b"FMETA",
    b"FDATA",
    b"FMULTISTATUS",
    b"CAPABILITY",
    b"AUTH",
    b"STATUS",
    b"SNAPSHOT",
    b"STARTTLS",
    b"USERFILES",
    b"FETCH",
    b"BEGIN",
    b"abababababababababababababababababababababababababababababababab",
    b"ANSWER",
    b"srv",
    b"bob",
    b"INBOX",
    b"seen",
    b"sub",
    b"header",
    b"index",
    b"1",
    b"-1",
    b"99999999999",
    b"\"",
    b"\"a b\"",
    b"{3}",
    b"%",
    b"%4",
    b"%zz",
    b"%00",
    b"%2F",
    b"..",
    b"/",
    b"(",
    b")",
    b"\\",
    b"\r",
    b"\t",
    b" ",
    b"  ",
    b"\0",
    b"\xff",
];

fn random_line(rng: &mut SmallRng) -> Vec<u8> {
    let mut line = Vec::new();
    let words = rng.gen_range(0..8);
    for _ in 0..words {
        if rng.gen_bool(0.7) {
            line.extend_from_slice(VOCAB[rng.gen_range(0..VOCAB.len())]);
        } else {
            for _ in 0..rng.gen_range(0..12) {
                line.push(rng.r#gen::<u8>());
            }
        }
        if rng.gen_bool(0.8) {
            line.push(b' ');
        }
    }
    // occasional mutation: flip, insert or delete a byte
    if !line.is_empty() && rng.gen_bool(0.3) {
        let at = rng.gen_range(0..line.len());
        match rng.gen_range(0..3) {
            0 => line[at] ^= 1 << rng.gen_range(0..8),
            1 => line.insert(at, rng.r#gen::<u8>()),
            _ => {
                line.remove(at);
            }
        }
    }
    line.retain(|&b| b != b'\n');
    line
}

#[test]
fn fuzz_parse_never_panics_and_encode_round_trips() {
    let mut rng = SmallRng::seed_from_u64(0x00c7_5a17);
    let mut round_trips = 0u32;
    for i in 0..300_000u32 {
        let line = random_line(&mut rng);
        let terminated = i % 7 != 0;
        let Ok(req) = parse_request_line(&line, terminated) else {
            continue;
        };
        let _ = req.allowed_before_auth();
        if let Ok(enc) = encode_request(&req) {
            let back = parse_request(&enc[..enc.len() - 1]).unwrap();
            assert_eq!(back, req, "line {line:?} encoded as {enc:?}");
            round_trips += 1;
        }
    }
    // the vocabulary must actually reach the command branches
    assert!(round_trips > 10_000, "only {round_trips} round trips");
}

#[test]
fn fuzz_huge_and_binary_lines() {
    let mut rng = SmallRng::seed_from_u64(7);
    for _ in 0..200 {
        let n = rng.gen_range(0..MAX_LINE + 100);
        let line: Vec<u8> = (0..n).map(|_| rng.r#gen::<u8>()).collect();
        let _ = parse_request(&line);
    }
}
