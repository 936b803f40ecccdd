//! Every mailbox of a populated sandbox: `cyrvault inspect index|header|cache
//! --json` against `mbexamine` and `unexpunge -l`, `inspect mailboxes` against
//! `ctl_mboxlist -d`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use cyrvault::cyrus::index::{parse_index, write_index};
use cyrvault::cyrus::paths;
use cyrvault_testkit::sandbox::{PopulatePlan, Sandbox, SandboxOptions, make_history, populate};
use serde_json::Value;

use super::{conf, cyrvault, cyrvault_json, start, strs, tool_utc, u};
use crate::mbexamine::{parse_mbexamine, parse_unexpunge};

/// Our view of one mailbox (binary, JSON) against mbexamine's and unexpunge's.
/// Returns (records compared with mbexamine, expunged records compared).
/// The name Cyrus's tools take (external form): with `unixhierarchysep` the
/// internal `.` is `/` and the internal `^` is `.`.
fn external(sb: &Sandbox, internal: &str) -> String {
    if sb.separator() == '/' {
        internal.replace('.', "/").replace('^', ".")
    } else {
        internal.to_string()
    }
}

/// `entry` is the mailbox's record in `inspect mailboxes --json`.
fn compare_mailbox(sb: &Sandbox, entry: &Value, dir: &Path) -> (usize, usize) {
    let name = entry["name"].as_str().unwrap();
    let ext = external(sb, name);
    let d = dir.to_str().unwrap();
    let ours = cyrvault_json(&["inspect", "index", d]);
    let head = cyrvault_json(&["inspect", "header", d]);
    let cache = cyrvault_json(&["inspect", "cache", d]);
    let ex = parse_mbexamine(&tool_utc(sb, "mbexamine", &[&ext]));
    let ctx = name;

    // the directory we computed is where Cyrus looks; cyrus.header agrees
    assert_eq!(Path::new(&ex.path), dir, "{ctx}");
    let h = &head["header"];
    assert_eq!(h["uniqueid"].as_str(), Some(ex.uniqueid.as_str()), "{ctx}");
    assert_eq!(h["uniqueid"], entry["uniqueid"], "{ctx}");
    // The name in cyrus.header: Cyrus 3.6.1 rewrites it on RENAME and on a delayed
    // DELETE for UUID mailboxes, but leaves the old name in a legacy-dirs mailbox
    // whose directory it moved (seen here); mailboxes.db has the truth.
    let hname = h["name"].as_str().unwrap();
    if entry["mbtype"].as_str().unwrap().contains('l') {
        let mut known = vec![name];
        known.extend(entry["deleted"]["original_name"].as_str());
        known.extend(
            entry["name_history"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|h| h["name"].as_str()),
        );
        assert!(known.contains(&hname), "{ctx}: {hname} not in {known:?}");
    } else {
        assert_eq!(hname, name, "{ctx}");
    }
    let acl: Vec<(String, String)> = h["acl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(acl, ex.acl, "{ctx}");

    // header counts
    let ih = &ours["header"];
    for (field, want) in &ex.header {
        assert_eq!(u(ih, field), *want, "{ctx}: header {field}");
    }
    assert_eq!(ex.header.len(), 15, "{ctx}: mbexamine header lines");
    let names: Vec<Option<String>> = ours["user_flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect();
    // mbexamine lists the names without the empty slots; Cyrus never empties one
    // here, so slot i is the i-th name.
    assert!(names.iter().all(Option::is_some), "{ctx}: {names:?}");
    let names: Vec<String> = names.into_iter().flatten().collect();
    assert_eq!(names, ex.user_flags, "{ctx}");

    // records: the non-expunged ones against mbexamine, in order
    let recs = ours["records"].as_array().unwrap();
    assert_eq!(recs.len() as u64, u(ih, "num_records"), "{ctx}");
    let live: Vec<&Value> = recs.iter().filter(|r| r["expunged"] == false).collect();
    assert_eq!(live.len(), ex.records.len(), "{ctx}: live records");
    let entries: BTreeMap<u64, &Value> = cache["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (u(e, "uid"), e))
        .collect();
    for (r, e) in live.iter().zip(&ex.records) {
        let raw = &r["record"];
        let uid = u(r, "uid");
        let ctx = format!("{name} uid {uid}");
        assert_eq!(uid, e.nums["UID:"], "{ctx}");
        assert_eq!(r["guid"].as_str(), Some(e.guid.as_str()), "{ctx}");
        assert_eq!(u(r, "internaldate"), e.nums["INT_DATE:"], "{ctx}");
        assert_eq!(u(r, "size"), e.nums["SIZE:"], "{ctx}");
        assert_eq!(u(r, "modseq"), e.nums["MODSEQ:"], "{ctx}");
        assert_eq!(u(r, "savedate"), e.nums["SAVEDATE:"], "{ctx}");
        assert_eq!(u(r, "last_updated"), e.nums["LASTUPD :"], "{ctx}");
        assert_eq!(u(raw, "sentdate"), e.nums["SENTDATE:"], "{ctx}");
        assert_eq!(u(raw, "header_size"), e.nums["HDRSIZE:"], "{ctx}");
        assert_eq!(u(raw, "cache_version"), e.nums["CACHEVER:"], "{ctx}");
        assert_eq!(
            u(raw, "system_flags") & 0xffff,
            u64::from(e.sysflags),
            "{ctx}"
        );
        if let Some(t) = e.thrid {
            assert_eq!(u(raw, "cid"), t, "{ctx}");
        }
        assert!(e.internal_flags.is_empty(), "{ctx}: {:?}", e.internal_flags);
        // system flags by name
        let mut mine: Vec<String> = strs(&r["system_flags"])
            .iter()
            .map(|n| format!("FLAG_{}", n.trim_start_matches('\\').to_uppercase()))
            .collect();
        let mut theirs = e.system_flags.clone();
        mine.sort();
        theirs.sort();
        assert_eq!(mine, theirs, "{ctx}");
        // keywords: the bitmap, and the names through mbexamine's flag list
        let words: Vec<u64> = raw["user_flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .collect();
        assert_eq!(words, e.user_flags.map(u64::from).to_vec(), "{ctx}");
        let theirs: Vec<String> = (0..128usize)
            .filter(|i| e.user_flags[i / 32] & (1 << (i % 32)) != 0)
            .map(|i| ex.user_flags[i].clone())
            .collect();
        assert_eq!(strs(&r["keywords"]), theirs, "{ctx}");
        // the cache entry: CRC good, and the items mbexamine printed
        let c = entries[&uid];
        assert_eq!(c["crc_ok"], true, "{ctx}: {c}");
        let lossy = |k: &str| String::from_utf8_lossy(&e.cache[k]).into_owned();
        assert_eq!(c["envelope"].as_str().unwrap(), lossy("Envel"), "{ctx}");
        assert_eq!(c["from"].as_str().unwrap(), lossy("From"), "{ctx}");
        assert_eq!(c["subject"].as_str().unwrap(), lossy("Subjct"), "{ctx}");
    }

    // The header's counts are the recount of the live records (what Cyrus's
    // mailbox_index_recalc would make them), and `mbexamine -q`, which sums the
    // message files, finds the quota usage right.
    let with = |flag: &str| {
        live.iter()
            .filter(|r| strs(&r["system_flags"]).iter().any(|f| f == flag))
            .count() as u64
    };
    let size: u64 = live.iter().map(|r| u(r, "size")).sum();
    assert_eq!(u(ih, "quota_mailbox_used"), size, "{ctx}");
    assert_eq!(u(ih, "exists"), live.len() as u64, "{ctx}");
    assert_eq!(u(ih, "deleted"), with("\\Deleted"), "{ctx}");
    assert_eq!(u(ih, "answered"), with("\\Answered"), "{ctx}");
    assert_eq!(u(ih, "flagged"), with("\\Flagged"), "{ctx}");
    assert_eq!(u(ih, "unseen"), live.len() as u64 - with("\\Seen"), "{ctx}");
    let maxmodseq = recs.iter().map(|r| u(r, "modseq")).max().unwrap_or(0);
    assert!(u(ih, "highestmodseq") >= maxmodseq, "{ctx}");
    let last = recs.last().map_or(0, |r| u(r, "uid"));
    assert!(u(ih, "last_uid") >= last, "{ctx}");
    let q = tool_utc(sb, "mbexamine", &["-q", &ext]);
    assert!(
        String::from_utf8_lossy(&q).contains("Mailbox has CORRECT total quota usage"),
        "{ctx}: {}",
        String::from_utf8_lossy(&q)
    );

    // expunged records against unexpunge -l
    let gone = parse_unexpunge(&String::from_utf8_lossy(&tool_utc(
        sb,
        "unexpunge",
        &["-l", &ext],
    )));
    let ours_gone: Vec<[u64; 5]> = recs
        .iter()
        .filter(|r| r["expunged"] == true)
        .map(|r| {
            [
                u(r, "uid"),
                u(r, "size"),
                u(&r["record"], "sentdate"),
                u(r, "internaldate"),
                u(r, "last_updated"),
            ]
        })
        .collect();
    assert_eq!(ours_gone, gone, "{name}: expunged records");
    (live.len(), gone.len())
}

#[test]
fn inspect_agrees_with_cyrus_on_every_mailbox() {
    let users = ["alice", "bob", "carol"];
    let plan = PopulatePlan {
        users: users.iter().map(|s| s.to_string()).collect(),
        folders_per_user: 6,
        messages: 300,
        seed: 2026,
        max_message_size: 24 * 1024,
        ..PopulatePlan::default()
    };
    oracle(start("found-oracle"), &plan, 250, 10);
}

/// The same with legacy (name-hashed) mailbox directories and `/` as the
/// hierarchy separator: other directories and other name-lock files.
#[test]
fn inspect_agrees_with_cyrus_on_legacy_dirs() {
    let sb = Sandbox::start(SandboxOptions {
        name_hint: "found-oracle-legacy".into(),
        legacy_dirs: true,
        unixhierarchysep: true,
        ..SandboxOptions::default()
    })
    .unwrap();
    let plan = PopulatePlan {
        users: vec!["gus".into(), "hal".into()],
        folders_per_user: 4,
        messages: 80,
        seed: 77,
        max_message_size: 16 * 1024,
        fixtures: false,
        ..PopulatePlan::default()
    };
    oracle(sb, &plan, 60, 2);
}

/// Populate `sb` by `plan`, make history, and compare every mailbox; the sandbox
/// must end up with at least `min_live` live and `min_expunged` expunged records.
fn oracle(sb: Sandbox, plan: &PopulatePlan, min_live: usize, min_expunged: usize) {
    let t0 = Instant::now();
    let users = &plan.users;
    let pop = populate(&sb, plan).unwrap();
    let hist = make_history(&sb, &pop, 7).unwrap();
    let loaded = t0.elapsed();
    let conf = conf(&sb);

    // mailboxes.db: ctl_mboxlist -d form, and the user list
    let db = sb.config_dir().join("mailboxes.db");
    let db_s = db.to_str().unwrap();
    let out = cyrvault(&["inspect", "mailboxes", db_s, "--ctl-mboxlist"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dump = sb.ctl_mboxlist_dump().unwrap();
    assert_eq!(
        ours, dump,
        "inspect mailboxes --ctl-mboxlist vs ctl_mboxlist -d"
    );
    let report = cyrvault_json(&["inspect", "mailboxes", db_s]);
    assert_eq!(&strs(&report["users"]), users);

    // every mailbox with a directory (tombstones of renamed/deleted names have none)
    let mut checked = BTreeMap::new();
    let mut partitions = BTreeSet::new();
    for m in report["mailboxes"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let mbtype = m["mbtype"].as_str().unwrap();
        if mbtype.contains(['d', 'i', 'r', 'z', 'm']) {
            assert!(m["partition"].is_null() || mbtype.contains('r'), "{m}");
            continue;
        }
        let part = m["partition"].as_str().unwrap();
        partitions.insert(part.to_string());
        let dir = paths::mailbox_data_dir(
            &conf,
            part,
            name,
            m["uniqueid"].as_str(),
            mbtype.contains('l'),
        )
        .unwrap();
        // write-back of every real index is byte-identical
        let bytes = std::fs::read(dir.join("cyrus.index")).unwrap();
        assert_eq!(write_index(&parse_index(&bytes).unwrap()), bytes, "{name}");
        checked.insert(name.to_string(), compare_mailbox(&sb, m, &dir));
    }
    // the sandbox holds what the issue asks for, and we looked at all of it
    let live: usize = checked.values().map(|c| c.0).sum();
    let expunged: usize = checked.values().map(|c| c.1).sum();
    assert!(live >= min_live, "{live} live records");
    assert!(expunged >= min_expunged, "{expunged} expunged records");
    assert_eq!(partitions.len(), 2, "{partitions:?}");
    for (_, new) in &hist.renamed {
        // the sandbox names mailboxes in the external form
        let new = if sb.separator() == '/' {
            new.replace('.', "^").replace('/', ".")
        } else {
            new.clone()
        };
        assert!(checked.contains_key(&new), "renamed {new} not checked");
    }
    let deleted = checked.keys().filter(|n| n.starts_with("DELETED.")).count();
    assert_eq!(deleted, hist.deleted.len());
    assert!(deleted >= users.len());
    let openable: BTreeSet<&String> = dump
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| !v["mbtype"].as_str().unwrap().contains('d'))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(openable, checked.keys().collect::<BTreeSet<_>>());
    eprintln!(
        "oracle: {} mailboxes, {live} live + {expunged} expunged records; load {loaded:?}, total {:?}",
        checked.len(),
        t0.elapsed()
    );
}
