//! The exports (mbox and Maildir read back by Python's `mailbox`), a damaged member,
//! and one message out of a large archive. Helpers are in `tests/restore.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cyrvault::cyrus::Guid;
use cyrvault_host::restore::Source;
use cyrvault_testkit::sandbox::{MailGen, PopulatePlan, populate};

use super::{count, env, expected, live};

/// Flip one byte in the middle of the member at `offset`.
fn flip_byte(archive: &Path, offset: u64, len: u64) {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(archive)
        .unwrap();
    let at = offset + len / 2;
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut b = [0u8; 1];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x55]).unwrap();
}

/// Bytes this process has read through read(2) so far (`rchar` of /proc/self/io).
fn rchar() -> u64 {
    fs::read_to_string("/proc/self/io")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

const PY_CHECK: &str = r#"
import hashlib, json, mailbox, re, sys
kind, path = sys.argv[1], sys.argv[2]
out = []
def sha(b): return hashlib.sha1(b).hexdigest()
if kind == "mbox":
    mb = mailbox.mbox(path, create=False)
    for k in mb.keys():
        b = re.sub(rb"(?m)^>(>*From )", rb"\1", mb.get_bytes(k))
        out.append(["", sha(b), ""])
else:
    root = mailbox.Maildir(path, factory=None, create=False)
    boxes = [("", root)] + [(n, root.get_folder(n)) for n in root.list_folders()]
    for name, md in boxes:
        for k in md.keys():
            out.append([name, sha(md.get_bytes(k)), md.get_message(k).get_flags()])
print(json.dumps(out))
"#;

fn python(kind: &str, path: &Path) -> Vec<(String, String, String)> {
    let out = Command::new("python3")
        .args(["-c", PY_CHECK, kind])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<(String, String, String)> = serde_json::from_slice(&out.stdout).unwrap();
    v.sort();
    v
}

#[test]
fn exports_damage_and_single_message() {
    let e = env("ex");
    let plan = PopulatePlan {
        users: vec!["carol".into()],
        folders_per_user: 4,
        messages: 240,
        seed: 11,
        partitions: false,
        max_message_size: 20_000,
        lmtp_every: 0,
        duplicate_every: 0,
        fixtures: true,
    };
    populate(&e.sb, &plan).unwrap();
    // A folder of large messages, so the archive is big and has many members.
    let big_mb: usize = std::env::var("CYRVAULT_RESTORE_BIG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    e.sb.create_folder("carol", "Big", None).unwrap();
    let mut mg = MailGen::new(3);
    let mut c = e.sb.login("carol").unwrap();
    let t = Instant::now();
    for i in 0..big_mb / 2 {
        let m = mg.message_of_size(2 << 20);
        c.append(
            "INBOX.Big",
            &["\\Seen"],
            Some(1_600_000_000 + i as i64),
            &m.bytes,
        )
        .unwrap();
    }
    c.logout().unwrap();
    println!(
        "{} MB of large messages appended in {:?}",
        big_mb,
        t.elapsed()
    );
    let t = Instant::now();
    e.backup("carol");
    let (cat, archive) = e.catalog("carol");
    let archive_len = fs::metadata(&archive).unwrap().len();
    println!(
        "backup: archive {} MB in {:?}",
        archive_len >> 20,
        t.elapsed()
    );
    let want = expected(&cat, 1, false);

    // mbox of one folder, Maildir of everything; Python's mailbox reads both back.
    let work = want
        .keys()
        .find(|k| k.starts_with("INBOX.W"))
        .unwrap()
        .clone();
    let mbox = e.dir.join("work.mbox");
    e.restore_ok("carol", &[&work, "--to-mbox", mbox.to_str().unwrap()]);
    let got = python("mbox", &mbox);
    let mut w: Vec<(String, String, String)> = want[&work]
        .iter()
        .map(|m| (String::new(), m.0.clone(), String::new()))
        .collect();
    w.sort();
    assert_eq!(got, w, "mbox of {work}");
    // Every folder but the large one (which only makes the archive big).
    let mut want_small = want.clone();
    want_small.remove("INBOX.Big");
    let small_names: Vec<&str> = want_small.keys().map(String::as_str).collect();
    let md = e.dir.join("maildir");
    e.restore_ok(
        "carol",
        &[&small_names[..], &["--to-maildir", md.to_str().unwrap()]].concat(),
    );
    let got = python("maildir", &md);
    let mut w: Vec<(String, String, String)> = Vec::new();
    for (folder, msgs) in &want_small {
        let name = folder.strip_prefix("INBOX.").unwrap_or("").to_string();
        for m in msgs {
            let rec_flags = &m.1;
            let mut f = String::new();
            for (flag, c) in [
                ("\\Draft", 'D'),
                ("\\Flagged", 'F'),
                ("$Forwarded", 'P'),
                ("\\Answered", 'R'),
                ("\\Seen", 'S'),
                ("\\Deleted", 'T'),
            ] {
                if rec_flags.iter().any(|x| x == flag) {
                    f.push(c);
                }
            }
            w.push((name.clone(), m.0.clone(), f));
        }
    }
    w.sort();
    assert_eq!(got.len(), count(&want_small));
    assert_eq!(got, w, "maildir");
    assert!(
        w.iter().any(|x| x.2.len() >= 2),
        "some messages carry several flags"
    );

    // One message from the large archive: one member read, timed.
    let big = &want["INBOX.Big"];
    let g = Guid::from_hex(&big[big.len() / 2].0).unwrap();
    let loc = cat.message_loc(&g).unwrap().unwrap();
    let mut src = Source::open(
        &archive,
        &cyrvault_host::restore::catalog_path_for(&archive),
    )
    .unwrap();
    let (r0, t) = (rchar(), Instant::now());
    let bytes = src.read_message(&g).unwrap();
    let (dt, read) = (t.elapsed(), rchar() - r0);
    assert_eq!(Guid::of(&bytes), g);
    println!(
        "single message ({} KB) from a {} MB archive: {:?}, {} KB read (its member at {} holds it at +{})",
        bytes.len() >> 10,
        archive_len >> 20,
        dt,
        read >> 10,
        loc.member_offset,
        loc.offset_in_member
    );
    assert!(read < archive_len / 4, "read {read} of {archive_len}");
    let eml = e.dir.join("one");
    let t = Instant::now();
    let v = e.restore_ok(
        "carol",
        &["--message", &g.to_hex(), "--to-eml", eml.to_str().unwrap()],
    );
    println!(
        "cyrvault restore --message --to-eml: {:?} (whole process)",
        t.elapsed()
    );
    assert_eq!(v["appended"], 1);
    let files: Vec<_> = fs::read_dir(eml.join("Big")).unwrap().collect();
    assert_eq!(files.len(), 1);

    // Damage: flip a byte in the member holding a small message; only messages of
    // that member fail, everything else is restored.
    let small = &want["INBOX"][want["INBOX"].len() / 2];
    let loc = cat
        .message_loc(&Guid::from_hex(&small.0).unwrap())
        .unwrap()
        .unwrap();
    // The member's compressed length, from a scan of the (intact) archive.
    let member_len = cyrvault_host::archive::scan(&archive)
        .unwrap()
        .members
        .iter()
        .find(|m| m.offset == loc.member_offset)
        .unwrap()
        .compressed_len;
    let in_member = cat.messages_in_member(loc.member_offset).unwrap().len();
    let dmg = e.dir.join("dmg");
    fs::create_dir_all(&dmg).unwrap();
    let dmg_archive = dmg.join("carol.tar.gz");
    fs::copy(&archive, &dmg_archive).unwrap();
    // A catalog is its file and its `-wal` (the backup does not checkpoint on close).
    let (cat_from, cat_to) = (
        cyrvault_host::restore::catalog_path_for(&archive),
        cyrvault_host::restore::catalog_path_for(&dmg_archive),
    );
    fs::copy(&cat_from, &cat_to).unwrap();
    let wal = |p: &std::path::Path| std::path::PathBuf::from(format!("{}-wal", p.display()));
    if wal(&cat_from).exists() {
        fs::copy(wal(&cat_from), wal(&cat_to)).unwrap();
    }
    // In the middle: the entries before the flip still inflate and are restored.
    flip_byte(&dmg_archive, loc.member_offset, member_len);
    let (out, v) = e.restore(
        "carol",
        &[
            &small_names[..],
            &[
                "--archive",
                dmg_archive.to_str().unwrap(),
                "--into",
                "Restored/dmg",
            ],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(65), "{v}");
    // Message failures; a folder-level one (an ACL in the same member) may come too.
    let failures: Vec<&serde_json::Value> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f["guid"].is_null())
        .collect();
    assert!(!failures.is_empty());
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for f in &failures {
        let g = f["guid"].as_str().unwrap();
        let l = cat
            .message_loc(&Guid::from_hex(g).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(l.member_offset, loc.member_offset, "{f}");
        *failed.entry(g.to_string()).or_default() += 1;
    }
    let got = live(&e.sb, "carol", Some("Restored.dmg"));
    let mut missing = 0;
    assert_eq!(got.len(), want_small.len());
    for (folder, msgs) in &want_small {
        let have = got.get(folder).cloned().unwrap_or_default();
        let mut wanted = msgs.clone();
        wanted.retain(|m| !failed.contains_key(&m.0));
        missing += msgs.len() - wanted.len();
        assert_eq!(have, wanted, "{folder}");
    }
    assert_eq!(missing, failures.len());
    assert!(
        failures.len() < in_member,
        "messages before the damage are restored ({} of {in_member} failed)",
        failures.len()
    );
    println!(
        "damaged member at {} ({member_len} bytes, {in_member} messages): {} of {} messages failed, the rest restored",
        loc.member_offset,
        failures.len(),
        count(&want_small)
    );
}
