//! Erasure and legal hold: `forget --message` leaves no byte of the message anywhere in
//! the archive (the raw file and its inflated stream searched), `--folder`, `--before`,
//! `--all`; a held user is neither pruned nor forgotten, the hold survives `reindex`.

use std::collections::BTreeMap;
use std::process::Command;

use cyrvault::cyrus::Guid;
use cyrvault_host::admin;
use cyrvault_host::catalog::Catalog;
use cyrvault_testkit::sandbox::MailGen;

use super::{
    Env, RunState, churn, env, make_user, reindex_agrees, run_state, runs_read_back,
    stock_tools_read, verify_green,
};

const USER: &str = "erin";

/// A text message with a marker no other message has.
fn marked(marker: &str) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nTo: erin@example.org\r\nSubject: {marker} subject\r\n\
         Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{marker}@example.org>\r\n\r\n\
         The body says {marker} three times: {marker}, {marker}.\r\n{}\r\n",
        "filler text for the deflate window ".repeat(40)
    )
    .into_bytes()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The archive's raw bytes and its inflated stream (`gzip -dc`), searched.
fn anywhere(path: &std::path::Path, needle: &[u8]) -> (bool, bool) {
    let raw = std::fs::read(path).unwrap();
    let out = Command::new("gzip").arg("-dc").arg(path).output().unwrap();
    assert!(out.status.success(), "gzip -dc: {out:?}");
    (contains(&raw, needle), contains(&out.stdout, needle))
}

fn states(e: &Env) -> BTreeMap<u64, RunState> {
    let cat = e.catalog(USER);
    cat.runs()
        .unwrap()
        .iter()
        .map(|r| (r.run, run_state(&cat, r.run)))
        .collect()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn forget_message_leaves_no_byte_and_a_record() {
    let e = env("forget");
    let mut mail = MailGen::new(21).with_max_size(40_000);
    make_user(&e.sb, USER, &mut mail, 6);
    let secret = marked("ZQXJ-ERASE-ME-7731");
    e.sb.append(USER, Some("Work"), &[], None, &secret).unwrap();
    e.sb.append(USER, None, &["\\Seen"], None, &secret).unwrap();
    let guid = Guid::of(&secret);
    for day in 1..=4 {
        if day > 1 {
            churn(&e.sb, USER, day, &mut mail);
        }
        e.backup(USER);
    }
    let ua = e.archive(USER);
    assert_eq!(anywhere(&ua.archive, b"ZQXJ-ERASE-ME-7731"), (false, true));
    let before = states(&e);
    // --dry-run says what would go and changes nothing.
    let o = e.cli(&[
        "forget",
        USER,
        "--message",
        &guid.to_hex(),
        "--reason",
        "GDPR request 12",
        "--dry-run",
        "--json",
    ]);
    let v = json(&o);
    assert_eq!(v["messages"][0][0], guid.to_hex(), "{v}");
    assert_eq!(v["runs"], 4, "{v}");
    assert_eq!(v["folders_touched"].as_object().unwrap().len(), 2, "{v}");
    assert_eq!(
        v["still_on_server"],
        serde_json::json!(["INBOX", "INBOX.Work"]),
        "{v}"
    );
    assert_eq!(anywhere(&ua.archive, b"ZQXJ-ERASE-ME-7731"), (false, true));
    let o = e.cli(&[
        "forget",
        USER,
        "--message",
        &guid.to_hex(),
        "--reason",
        "GDPR request 12",
        "--json",
    ]);
    let v = json(&o);
    assert_eq!(v["message_bytes"], secret.len(), "{v}");
    // No byte of it: not the marker, not its whole text, not a line of it, raw or
    // inflated (a re-packed member's slack included).
    for needle in [
        &b"ZQXJ-ERASE-ME-7731"[..],
        &secret[..],
        &secret[secret.len() - 200..],
        b"The body says",
    ] {
        assert_eq!(anywhere(&ua.archive, needle), (false, false));
    }
    // Every run is still there, without the message; the rest as before.
    let after = states(&e);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (run, mut want) in before {
        for (_, recs) in want.values_mut() {
            recs.retain(|r| r.guid != guid);
        }
        assert_eq!(after[&run], want, "run {run}");
    }
    let runs: Vec<u64> = after.keys().copied().collect();
    runs_read_back(&e, USER, &runs);
    let o = e.cli(&["cat", USER, &guid.to_hex()]);
    assert!(
        !o.status.success(),
        "an erased message cannot be read: {o:?}"
    );
    // The record: what, when, why — not the content.
    let v = json(&e.cli(&["show", USER, "--json"]));
    let ev = &v["retention"][0];
    assert_eq!(ev["kind"], "erase", "{v}");
    assert_eq!(ev["reason"], "GDPR request 12");
    let cat = e.catalog(USER);
    let er = cat.erased().unwrap()[&guid];
    assert_eq!((er.size, er.permanent), (secret.len() as u64, true));
    drop(cat);
    verify_green(&e, USER);
    reindex_agrees(&e, USER);
    stock_tools_read(&ua.archive);
    // A later backup goes on, and the message, still on the server, is erased for
    // good: left out of every folder that shows it, never fetched again.
    let mut c = e.sb.login(USER).unwrap();
    c.select("INBOX").unwrap();
    c.uid_store("1", "+FLAGS", &["\\Flagged"]).unwrap();
    c.close().unwrap();
    c.select("INBOX.Work").unwrap();
    c.uid_store("1", "+FLAGS", &["\\Flagged"]).unwrap();
    c.logout().unwrap();
    let rep = e.backup(USER);
    assert_eq!(rep.messages_fetched, 0, "{rep:#?}");
    assert_eq!(rep.messages_erased_skipped, 2, "{rep:#?}");
    let cat = e.catalog(USER);
    for (_, (_, recs)) in run_state(&cat, rep.run) {
        assert!(recs.iter().all(|r| r.guid != guid));
    }
    drop(cat);
    assert_eq!(anywhere(&ua.archive, b"ZQXJ-ERASE-ME-7731"), (false, false));
    verify_green(&e, USER);
    reindex_agrees(&e, USER);
}

#[test]
fn forget_folder_before_and_all() {
    let e = env("forgetf");
    let mut mail = MailGen::new(22).with_max_size(30_000);
    make_user(&e.sb, USER, &mut mail, 5);
    for day in 1..=3 {
        if day > 1 {
            churn(&e.sb, USER, day, &mut mail);
        }
        e.backup(USER);
    }
    let ua = e.archive(USER);
    let cat = e.catalog(USER);
    let lists = cat.folder_by_name_at("INBOX.Lists", 3).unwrap().unwrap();
    let lists_guids = cat.folder_guids(&lists.uniqueid).unwrap();
    drop(cat);
    let v = json(&e.cli(&[
        "forget",
        USER,
        "--folder",
        "INBOX.Lists",
        "--reason",
        "litigation over",
        "--json",
    ]));
    assert_eq!(v["folders_removed"][0]["uniqueid"], lists.uniqueid, "{v}");
    let cat = e.catalog(USER);
    for r in cat.runs().unwrap() {
        assert!(
            cat.folders_at(r.run)
                .unwrap()
                .iter()
                .all(|f| f.uniqueid != lists.uniqueid),
            "run {}",
            r.run
        );
    }
    drop(cat);
    let stored = cyrvault_host::archive::scan(&ua.archive).unwrap();
    for m in &stored.members {
        for en in &m.entries {
            assert!(!en.name.contains(&lists.uniqueid), "{}", en.name);
            for g in &lists_guids {
                assert!(!en.name.ends_with(&g.to_hex()), "{}", en.name);
            }
        }
    }
    verify_green(&e, USER);
    reindex_agrees(&e, USER);
    // --before: every message with an older internal date.
    let cut = "2021-01-01T00:00:00Z";
    let t = admin::parse_time(cut).unwrap();
    let v = json(&e.cli(&[
        "forget",
        USER,
        "--before",
        cut,
        "--reason",
        "older than 2021",
        "--json",
    ]));
    assert!(v["messages"].as_array().unwrap().len() > 1, "{v}");
    let cat = e.catalog(USER);
    for r in cat.runs().unwrap() {
        for (_, (_, recs)) in run_state(&cat, r.run) {
            assert!(recs.iter().all(|x| x.internaldate >= t));
        }
    }
    assert_eq!(cat.retention_events().unwrap().len(), 2);
    drop(cat);
    verify_green(&e, USER);
    reindex_agrees(&e, USER);
    // --all: archive, catalog and vault entry gone; the erasure logged in the vault.
    let v = json(&e.cli(&[
        "forget",
        USER,
        "--all",
        "--reason",
        "account closed",
        "--json",
    ]));
    assert!(!v["removed_files"].as_array().unwrap().is_empty());
    assert!(!ua.archive.exists() && !ua.catalog.exists());
    assert!(admin::find_user(&e.vault, USER).is_err());
    let log =
        std::fs::read_to_string(e.vault.join(cyrvault_host::retention::ERASURES_LOG)).unwrap();
    assert!(
        log.contains("account closed") && log.contains(USER),
        "{log}"
    );
}

#[test]
fn a_held_user_is_not_pruned_nor_forgotten() {
    let e = env("hold");
    let mut mail = MailGen::new(23).with_max_size(20_000);
    make_user(&e.sb, USER, &mut mail, 4);
    for day in 1..=3 {
        if day > 1 {
            churn(&e.sb, USER, day, &mut mail);
        }
        e.backup(USER);
    }
    let ua = e.archive(USER);
    let v = json(&e.cli(&[
        "hold",
        USER,
        "--reason",
        "case 2026-17",
        "--until",
        "2099-01-01",
        "--json",
    ]));
    assert_eq!(v["holds"][0]["reason"], "case 2026-17");
    let len = std::fs::metadata(&ua.archive).unwrap().len();
    verify_green(&e, USER);
    // Refused, and nothing changes.
    let o = e.cli(&["prune", USER, "--keep-last", "1"]);
    assert_eq!(o.status.code(), Some(64), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("legal hold"),
        "{o:?}"
    );
    let o = e.cli(&["forget", USER, "--folder", "INBOX.Work", "--reason", "x"]);
    assert_eq!(o.status.code(), Some(64), "{o:?}");
    let o = e.cli(&["forget", USER, "--all", "--reason", "x"]);
    assert_eq!(o.status.code(), Some(64), "{o:?}");
    // `prune --all` skips the held user and says so.
    let v = json(&e.cli(&["prune", "--all", "--keep-last", "1", "--json"]));
    assert_eq!(v["held"][0][0], USER, "{v}");
    assert_eq!(std::fs::metadata(&ua.archive).unwrap().len(), len);
    assert_eq!(e.catalog(USER).runs().unwrap().len(), 3);
    // list and show say it.
    let v = json(&e.cli(&["list", "--json"]));
    assert_eq!(v["users"][0]["holds"][0]["reason"], "case 2026-17", "{v}");
    let v = json(&e.cli(&["show", USER, "--json"]));
    assert_eq!(v["holds"][0]["reason"], "case 2026-17", "{v}");
    // The hold is in the archive: it survives the catalog.
    std::fs::remove_file(&ua.catalog).unwrap();
    let o = e.cli(&["reindex", USER]);
    assert!(o.status.success(), "{o:?}");
    let o = e.cli(&["prune", USER, "--keep-last", "1"]);
    assert_eq!(o.status.code(), Some(64), "held after reindex: {o:?}");
    // A backup adopts the hold's member; still held.
    churn(&e.sb, USER, 4, &mut mail);
    e.backup(USER);
    verify_green(&e, USER);
    reindex_agrees(&e, USER);
    let o = e.cli(&["prune", USER, "--keep-last", "1"]);
    assert_eq!(o.status.code(), Some(64), "{o:?}");
    // Released: prune goes ahead, and the record of the hold stays.
    let v = json(&e.cli(&[
        "hold",
        USER,
        "--release",
        "--reason",
        "case closed",
        "--json",
    ]));
    assert_eq!(v["action"], "released");
    let o = e.cli(&["prune", USER, "--keep-last", "1", "--json"]);
    let v = json(&o);
    assert_eq!(v["users"][0]["runs_kept"], serde_json::json!([4]), "{v}");
    let cat = Catalog::open_read_only(&ua.catalog).unwrap();
    let kinds: Vec<String> = cat
        .retention_events()
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["hold", "release", "prune"]);
    drop(cat);
    verify_green(&e, USER);
    reindex_agrees(&e, USER);
}
