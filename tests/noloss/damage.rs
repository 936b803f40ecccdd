//! `verify` against every kind of catalog damage issue 9 names (and a few more), both
//! directions; `verify` on an empty or missing catalog writes nothing; `reindex` of a
//! damaged archive (cut inside committed runs, a flipped byte) refuses and keeps the old
//! catalog byte for byte, and `--salvage` rebuilds from what can be read, says what was
//! lost, and the next backup fetches the lost messages again. Each case works on a copy
//! of one vault made by real backups of a real Cyrus.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cyrvault::cyrus::Guid;
use cyrvault_host::archive;
use cyrvault_testkit::sandbox::MailGen;

use super::{Env, env, nothing_lost};

const USER: &str = "vera";

fn sha1_file(p: &Path) -> Option<Guid> {
    std::fs::read(p).ok().map(|b| Guid::of(&b))
}

/// A copy of the vault at `to` (`cp -a`).
fn copy_vault(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn cli(vault: &Path, args: &[&str]) -> Output {
    Command::new(crate::bins::cyrvault())
        .args(args)
        .arg("--vault")
        .arg(vault)
        .output()
        .unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// The vault's archive and catalog for USER.
fn files(vault: &Path) -> (PathBuf, PathBuf) {
    let ua = cyrvault_host::admin::find_user(vault, USER).unwrap();
    (ua.archive, ua.catalog)
}

/// Two real runs of a user with two folders.
fn two_runs() -> Env {
    let e = env("verify", false);
    e.sb.create_user(USER, None).unwrap();
    e.sb.create_folder(USER, "Work", None).unwrap();
    let mut mail = MailGen::new(17);
    for i in 0..12 {
        let m = mail.message_of_size(4000 + i * 300);
        let folder = (i % 3 == 0).then_some("Work");
        e.sb.append(USER, folder, &[], Some(m.date), &m.bytes)
            .unwrap();
    }
    assert!(!e.backup(USER).has_problems());
    for i in 0..6 {
        let m = mail.message_of_size(5000 + i * 100);
        e.sb.append(USER, None, &["\\Seen"], Some(m.date), &m.bytes)
            .unwrap();
    }
    assert!(!e.backup(USER).has_problems());
    nothing_lost(&e, USER, 3);
    e
}

/// Apply `sql` to a copy of the vault's catalog; `verify` must fail with a mismatch
/// containing `want`, through the library and the command (65).
fn damaged_catalog(e: &Env, case: &str, sql: &str, want: &str) {
    let v = e.dir.join(format!("case-{case}"));
    copy_vault(&e.vault, &v);
    let (_, catalog) = files(&v);
    let db = rusqlite::Connection::open(&catalog).unwrap();
    let n = db.execute_batch(sql);
    assert!(n.is_ok(), "{case}: {sql}: {n:?}");
    drop(db);
    let ua = cyrvault_host::admin::find_user(&v, USER).unwrap();
    let r = cyrvault_host::admin::verify(&ua).unwrap();
    assert!(!r.ok, "{case}: verify passed a damaged catalog: {r:#?}");
    let all: Vec<&str> = r.mismatches.iter().map(|m| m.what.as_str()).collect();
    assert!(
        all.iter().any(|m| m.contains(want)),
        "{case}: no mismatch saying {want:?}: {all:#?}"
    );
    let o = cli(&v, &["verify", USER]);
    assert_eq!(o.status.code(), Some(65), "{case}: {o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("FAILED") && text.contains(want),
        "{case}: {text}"
    );
    std::fs::remove_dir_all(&v).unwrap();
}

#[test]
fn verify_catches_catalog_damage_and_never_writes() {
    let e = two_runs();
    let (archive, catalog) = files(&e.vault);
    let archive_len = std::fs::metadata(&archive).unwrap().len();
    let big = archive_len + 1_000_000;

    // The race's artefact: a record whose message is in no member.
    damaged_catalog(
        &e,
        "unheld",
        "INSERT INTO records (uniqueid, uid, guid, system_flags, keywords, internaldate,
             size, modseq, last_updated, savedate, from_run)
         SELECT uniqueid, 999, randomblob(20), 0, '[]', 0, 10, 1, 0, 0, 2
         FROM folders LIMIT 1;",
        "uid 999, runs 2 on: message",
    );
    // A message row gone: its records name a message the catalog says is not held,
    // the archive's entry has no row, and the counts disagree.
    damaged_catalog(
        &e,
        "nomessage",
        "DELETE FROM messages WHERE guid = (SELECT guid FROM messages ORDER BY guid LIMIT 1);",
        "is in no member of the archive",
    );
    damaged_catalog(
        &e,
        "counts",
        "DELETE FROM messages WHERE guid = (SELECT guid FROM messages ORDER BY guid LIMIT 1);",
        "counts: the catalog has",
    );
    // folder_runs rows: a negative offset, half a location, past the member's end.
    damaged_catalog(
        &e,
        "negative",
        "UPDATE folder_runs SET index_offset = -512 WHERE run = 2;",
        "damaged location (member",
    );
    damaged_catalog(
        &e,
        "half",
        "UPDATE folder_runs SET header_size = NULL WHERE run = 1;",
        ", size NULL)",
    );
    damaged_catalog(
        &e,
        "pastmember",
        "UPDATE folder_runs SET state_offset = 1000000000 WHERE run = 1;",
        "run past the end of the member",
    );
    damaged_catalog(
        &e,
        "nolocation",
        "UPDATE folder_runs SET index_member = NULL, index_offset = NULL, index_size = NULL
         WHERE run = 1;",
        "/000001/cyrus.index): the catalog has no location for it",
    );
    // members rows: past the end of the archive; a negative length.
    damaged_catalog(
        &e,
        "pastend",
        &format!(
            "UPDATE members SET compressed_len = {big} - offset
             WHERE offset = (SELECT max(offset) FROM members);"
        ),
        "past the end of the archive",
    );
    damaged_catalog(
        &e,
        "negmember",
        "UPDATE members SET compressed_len = -1 WHERE offset = 0;",
        "has a negative value",
    );
    // A message row pointing at another entry.
    damaged_catalog(
        &e,
        "wrongentry",
        "UPDATE messages SET (member_offset, offset_in_member) =
             (SELECT member_offset, offset_in_member FROM messages ORDER BY guid LIMIT 1)
         WHERE guid = (SELECT guid FROM messages ORDER BY guid DESC LIMIT 1);",
        "expected, the entry there is",
    );
    // A run the archive has that the catalog lost (and what referred to it).
    damaged_catalog(
        &e,
        "norun",
        "PRAGMA foreign_keys = OFF; DELETE FROM runs WHERE run = 2;",
        "run 2: its manifest is in the archive, the catalog has no such run",
    );

    // verify of an empty catalog: fails, and leaves the file empty (no schema).
    let v = e.dir.join("case-empty");
    copy_vault(&e.vault, &v);
    let (_, cat) = files(&v);
    let side = |suffix: &str| {
        let mut p = cat.clone().into_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    std::fs::write(&cat, b"").unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(side(suffix));
    }
    let o = cli(&v, &["verify", USER, "--json"]);
    assert_eq!(o.status.code(), Some(65), "{o:?}");
    assert!(
        json(&o)["users"][0]["mismatches"]
            .to_string()
            .contains("not a cyrvault catalog")
    );
    assert_eq!(
        std::fs::metadata(&cat).unwrap().len(),
        0,
        "verify wrote a schema"
    );
    for suffix in ["-wal", "-shm"] {
        assert!(!side(suffix).exists(), "verify left {suffix}");
    }
    // ... and of a missing one: fails, creates nothing.
    std::fs::remove_file(&cat).unwrap();
    let o = cli(&v, &["verify", USER]);
    assert_eq!(o.status.code(), Some(65), "{o:?}");
    assert!(!cat.exists(), "verify created a catalog");
    // The other read-only commands do not write either.
    std::fs::write(&cat, b"").unwrap();
    for args in [&["ls", USER][..], &["show", USER], &["stats", USER]] {
        let o = cli(&v, args);
        assert!(!o.status.success(), "{args:?}: {o:?}");
        assert_eq!(std::fs::metadata(&cat).unwrap().len(), 0, "{args:?} wrote");
    }
    std::fs::remove_dir_all(&v).unwrap();

    // The pristine vault is still green (nothing above touched it).
    let before = sha1_file(&catalog);
    nothing_lost(&e, USER, 1);
    assert_eq!(sha1_file(&catalog), before, "verify wrote to the catalog");
}

#[test]
fn reindex_refuses_a_damaged_archive_unless_salvage() {
    let e = two_runs();
    let (archive, catalog) = files(&e.vault);
    let scan = archive::scan(&archive).unwrap();
    // Cut the archive in the middle of run 1's last message member: runs 1 (part) and 2
    // are behind the cut, the catalog knows them.
    let victim = scan
        .members
        .iter()
        .rfind(|m| {
            m.entries.iter().any(|x| {
                matches!(
                    archive::parse_entry_name(&x.name),
                    archive::EntryName::Message(_)
                )
            })
        })
        .unwrap()
        .clone();
    let cut = victim.offset + victim.compressed_len / 2;
    let whole = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, &whole[..cut as usize]).unwrap();
    let cat_before = sha1_file(&catalog);

    // Refused: non-zero, the old catalog kept byte for byte, no .new left behind.
    let o = cli(&e.vault, &["reindex", USER, "--json"]);
    assert_eq!(o.status.code(), Some(65), "{o:?}");
    let j = json(&o);
    let r = &j["users"][0];
    assert_eq!(r["refused"], true, "{r}");
    assert!(
        r["damage"]
            .to_string()
            .contains("the archive is cut at offset"),
        "{r}"
    );
    assert_eq!(
        sha1_file(&catalog),
        cat_before,
        "the old catalog was touched"
    );
    let mut new = catalog.clone().into_os_string();
    new.push(".new");
    assert!(!PathBuf::from(new).exists());
    let o = cli(&e.vault, &["reindex", USER]);
    assert_eq!(o.status.code(), Some(65));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("REFUSED"),
        "{o:?}"
    );
    assert_eq!(sha1_file(&catalog), cat_before);

    // --salvage: rebuilt from what can be read, and what was lost is named.
    let lost_guids: Vec<String> = victim
        .entries
        .iter()
        .filter_map(|x| match archive::parse_entry_name(&x.name) {
            archive::EntryName::Message(g) => Some(g.to_hex()),
            _ => None,
        })
        .collect();
    let o = cli(&e.vault, &["reindex", USER, "--salvage", "--json"]);
    assert_eq!(o.status.code(), Some(65), "salvaged is not clean: {o:?}");
    let j = json(&o);
    let r = &j["users"][0];
    assert_eq!(r["refused"], false, "{r}");
    assert_eq!(r["salvage"], true);
    assert!(!r["lost"]["runs"].as_array().unwrap().is_empty(), "{r}");
    let lost = r["lost"]["messages"].to_string();
    for g in &lost_guids {
        assert!(lost.contains(g.as_str()), "{g} not reported lost: {r}");
    }
    assert_ne!(sha1_file(&catalog), cat_before);
    let text = cli(&e.vault, &["verify", USER]);
    assert!(
        text.status.success(),
        "the salvaged catalog matches the archive: {text:?}"
    );

    // The next backup cuts the leftover tail and fetches the lost messages again.
    let rep = e.backup(USER);
    assert!(!rep.has_problems(), "{rep:?}");
    assert!(rep.messages_fetched as usize >= lost_guids.len(), "{rep:?}");
    nothing_lost(&e, USER, 3);

    // A flipped byte inside a member: refused too; --salvage indexes the rest.
    let scan = archive::scan(&archive).unwrap();
    let m = &scan.members[scan.members.len() / 2];
    let mut bytes = std::fs::read(&archive).unwrap();
    bytes[(m.offset + m.compressed_len / 2) as usize] ^= 0x40;
    std::fs::write(&archive, &bytes).unwrap();
    let before = sha1_file(&catalog);
    let o = cli(&e.vault, &["reindex", USER, "--json"]);
    assert_eq!(o.status.code(), Some(65), "{o:?}");
    assert_eq!(json(&o)["users"][0]["refused"], true);
    assert_eq!(sha1_file(&catalog), before);
    let o = cli(&e.vault, &["reindex", USER, "--salvage", "--json"]);
    let r = &json(&o)["users"][0];
    assert_eq!(r["refused"], false, "{r}");
    assert_eq!(r["damaged"][0]["offset"], m.offset, "{r}");

    // A clean archive reindexes with exit 0.
    let e2 = two_runs();
    let o = cli(&e2.vault, &["reindex", USER, "--json"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(json(&o)["users"][0]["refused"], false);
    nothing_lost(&e2, USER, 1);
}
