//! The admin commands (`cyrvault list/show/ls/cat/verify/reindex/stats`) against
//! archives made from a real Cyrus 3.6 spool.
//!
//! Until the backup pipeline is merged, the archives are written here with the same
//! calls it makes: the real sandbox's `cyrus.header`, `cyrus.index` and message files
//! are read from the spool (Cyrus is idle between the IMAP changes the test makes),
//! stored with `ArchiveWriter` under the entry names of `doc/archive-format.md`, and
//! committed with `Catalog::write_run` (the one call sequence both backup and reindex
//! use). Every answer is then taken through the real `cyrvault` binary's `--json`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cyrvault::admin::{self, UserArchive};
use cyrvault::archive::{
    self, ArchiveWriter, EntryName, MemberInfo, WriterOptions, folder_entry, message_entry, run_id,
    run_manifest_entry,
};
use cyrvault::catalog::{Catalog, FolderMeta, MemberRow, RunParts};
use cyrvault::cyrus::Guid;
use cyrvault::cyrus::header::parse_header;
use cyrvault::model::{self, EntryLoc, FolderInRun, MANIFEST_FORMAT, RecordState, RunManifest};
use cyrvault::sandbox::{Sandbox, SandboxOptions};

const USER: &str = "alice";

/// A sandbox user and the archive a hand-driven backup writes for it.
struct Fixture {
    sb: Sandbox,
    vault: PathBuf,
    archive: PathBuf,
    catalog: PathBuf,
    opts: WriterOptions,
    run: u64,
    /// Archive length after the last committed run.
    end: u64,
    /// The previous run's folders (uniqueid -> entry), to find deleted ones.
    prev: BTreeMap<String, FolderInRun>,
    /// Run start times: 1000 s apart, so `--at` can pick each.
    t0: i64,
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cyrvault-admin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A message of about `size` bytes whose body is seeded noise (so members do not
/// compress to nothing and each message is distinct).
fn message(n: u32, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: sender{n}@example.org\r\nTo: {USER}@example.org\r\nSubject: message {n}\r\n\
         Message-ID: <{n}@example.org>\r\n\r\n"
    )
    .into_bytes();
    let mut x: u64 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut col = 0;
    while m.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m.push(ALPHA[(x % 64) as usize]);
        col += 1;
        if col == 76 {
            m.extend_from_slice(b"\r\n");
            col = 0;
        }
    }
    m.extend_from_slice(b"\r\n");
    m
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

impl Fixture {
    fn new(name: &str, member_target: u64) -> Fixture {
        let sb = Sandbox::start(SandboxOptions {
            name_hint: format!("admin-{name}"),
            ..Default::default()
        })
        .unwrap();
        sb.create_user(USER, None).unwrap();
        let vault = scratch(name);
        let id = "inbox-id-of-alice";
        let shard = vault.join("in");
        std::fs::create_dir_all(&shard).unwrap();
        Fixture {
            sb,
            archive: shard.join(format!("{id}.tar.gz")),
            catalog: shard.join(format!("{id}.catalog.sqlite")),
            vault,
            opts: WriterOptions {
                member_target,
                ..Default::default()
            },
            run: 0,
            end: 0,
            prev: BTreeMap::new(),
            t0: 1_764_000_000,
        }
    }

    fn ua(&self) -> UserArchive {
        UserArchive::from_archive_path(&self.archive)
    }

    /// One backup run of the user's folders (external names, `INBOX` first), the way
    /// the pipeline does it: changed folders get a snapshot, messages the archive
    /// lacks are stored, then the manifest in its own member, then the catalog.
    fn backup(&mut self, folders: &[&str]) {
        self.run += 1;
        let run = self.run;
        let rid = run_id(run);
        let mut cat = Catalog::open(&self.catalog).unwrap();
        let mut w = ArchiveWriter::open_with(
            &self.archive,
            WriterOptions {
                committed_len: Some(self.end),
                ..self.opts.clone()
            },
        )
        .unwrap();
        if self.end == 0 {
            self.end = w.open_report().len;
        }
        let mut manifest_folders = Vec::new();
        let mut changed: HashMap<String, Vec<RecordState>> = HashMap::new();
        let mut seen_now = BTreeMap::new();
        for &name in folders {
            let folder = (name != "INBOX").then_some(name);
            let internal = self.sb.mailbox_name(USER, folder);
            let dir = self.sb.mbpath(&internal).unwrap();
            let hb = read(&dir.join("cyrus.header"));
            let ib = read(&dir.join("cyrus.index"));
            let uniqueid = parse_header(&hb).unwrap().uniqueid.unwrap();
            let (state, records) = model::records_from_meta(&hb, &ib).unwrap();
            let same = cat
                .folder_state_last(&uniqueid)
                .unwrap()
                .is_some_and(|s| s.same_content(&state));
            let snapshot_run = if same {
                self.prev[&uniqueid].snapshot_run
            } else {
                let mut guids: Vec<Guid> = records.iter().map(|r| r.guid).collect();
                guids = cat.missing_guids(&guids).unwrap();
                for g in &guids {
                    let r = records.iter().find(|r| r.guid == *g).unwrap();
                    let bytes = read(&dir.join(format!("{}.", r.uid)));
                    assert_eq!(Guid::of(&bytes), *g, "spool file of uid {}", r.uid);
                    w.add(&message_entry(g), &bytes, r.internaldate as u64)
                        .unwrap();
                }
                let now = (self.t0 + run as i64 * 1000) as u64;
                for (file, bytes) in [
                    ("cyrus.header", hb.clone()),
                    ("cyrus.index", ib.clone()),
                    ("state.json", serde_json::to_vec(&state).unwrap()),
                ] {
                    w.add(&folder_entry(&uniqueid, &rid, file).unwrap(), &bytes, now)
                        .unwrap();
                }
                changed.insert(uniqueid.clone(), records);
                run
            };
            let f = FolderInRun {
                uniqueid: uniqueid.clone(),
                name: name.to_string(),
                internal_name: internal,
                deleted: false,
                state,
                snapshot_run,
            };
            seen_now.insert(uniqueid, f.clone());
            manifest_folders.push(f);
        }
        for (uid, f) in &self.prev {
            if !seen_now.contains_key(uid) {
                manifest_folders.push(FolderInRun {
                    deleted: true,
                    ..f.clone()
                });
            }
        }
        let members: Vec<MemberInfo> = w.finish_member().unwrap();
        let started = self.t0 + run as i64 * 1000;
        let manifest = RunManifest {
            format: MANIFEST_FORMAT,
            run,
            user: USER.into(),
            started,
            finished: started + 7,
            server: "sandbox:2005".into(),
            tool_version: "test".into(),
            folders: manifest_folders,
            user_state: None,
            members: members.iter().map(|m| m.offset).collect(),
        };
        w.begin_member().unwrap();
        w.add(
            &run_manifest_entry(&rid).unwrap(),
            &serde_json::to_vec(&manifest).unwrap(),
            started as u64,
        )
        .unwrap();
        let mm = w.finish_member().unwrap();
        drop(w);
        let all: Vec<&MemberInfo> = members.iter().chain(mm.iter()).collect();
        self.end = all.iter().map(|m| m.end()).max().unwrap_or(self.end);
        let loc = |m: &MemberInfo, e: &archive::EntryLoc| EntryLoc {
            member_offset: m.offset,
            offset_in_member: e.offset_in_member,
            size: e.size,
        };
        let find = |name: &str| {
            all.iter()
                .find_map(|m| m.entries.iter().find(|e| e.name == name).map(|e| loc(m, e)))
        };
        let rows: Vec<MemberRow> = all
            .iter()
            .map(|m| MemberRow {
                offset: m.offset,
                compressed_len: m.compressed_len,
                uncompressed_len: m.uncompressed_len,
                crc32: None,
            })
            .collect();
        let messages: Vec<(Guid, EntryLoc)> = all
            .iter()
            .flat_map(|m| m.entries.iter().map(move |e| (m, e)))
            .filter_map(|(m, e)| match archive::parse_entry_name(&e.name) {
                EntryName::Message(g) => Some((g, loc(m, e))),
                _ => None,
            })
            .collect();
        let snapshots: HashMap<String, (FolderMeta, Vec<RecordState>)> = changed
            .into_iter()
            .map(|(uid, records)| {
                let at = |f: &str| find(&folder_entry(&uid, &rid, f).unwrap());
                let meta = FolderMeta {
                    header: at("cyrus.header"),
                    index: at("cyrus.index"),
                    annotations: at("cyrus.annotations"),
                    state: at("state.json"),
                };
                (uid, (meta, records))
            })
            .collect();
        cat.write_run(
            &manifest,
            &RunParts {
                manifest_loc: find(&run_manifest_entry(&rid).unwrap()),
                members: &rows,
                messages: &messages,
                snapshots: &snapshots,
                user_files: &[],
            },
        )
        .unwrap();
        self.prev = seen_now;
    }

    fn append(&self, folder: Option<&str>, flags: &[&str], n: u32, size: usize) -> u32 {
        self.sb
            .append(
                USER,
                folder,
                flags,
                Some(self.t0 - 86_400 + i64::from(n)),
                &message(n, size),
            )
            .unwrap()
            .1
    }
}

/// Run the real binary; returns the output.
fn cyrvault(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cyrvault"))
        .args(args)
        .output()
        .unwrap()
}

/// `cyrvault ARGS --json` must exit 0; its JSON.
fn json(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let o = cyrvault(&a);
    assert!(
        o.status.success(),
        "cyrvault {a:?}: {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every answer list/show/ls/cat give about the fixture's user, as text to compare.
fn answers(fx: &Fixture) -> BTreeMap<String, String> {
    answers_for(fx.vault.to_str().unwrap(), USER, fx.run)
}

/// [`answers`] for any user of a vault with `runs` runs.
fn answers_for(v: &str, user: &str, runs: u64) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |k: String, val: String| {
        out.insert(k, val);
    };
    put("list".into(), json(&["list", "--vault", v]).to_string());
    put(
        "show".into(),
        json(&["show", "--vault", v, user]).to_string(),
    );
    let mut guids = std::collections::BTreeSet::new();
    for run in 1..=runs {
        let r = run.to_string();
        let ls = json(&["ls", "--vault", v, user, "--run", &r]);
        put(format!("ls run {run}"), ls.to_string());
        for f in ls["folders"].as_array().unwrap() {
            let name = f["name"].as_str().unwrap();
            let msgs = json(&["ls", "--vault", v, user, name, "--run", &r]);
            for m in msgs["messages"].as_array().unwrap() {
                guids.insert(m["guid"].as_str().unwrap().to_string());
                let uid = m["uid"].to_string();
                let o = cyrvault(&["cat", "--vault", v, user, name, &uid, "--run", &r]);
                assert!(o.status.success(), "cat {name} {uid} run {r}");
                put(
                    format!("cat {name} {uid} run {r}"),
                    hex::encode(Guid::of(&o.stdout).0),
                );
            }
            put(format!("ls {name} run {run}"), msgs.to_string());
        }
    }
    for g in guids {
        let o = cyrvault(&["cat", "--vault", v, user, &g]);
        assert!(o.status.success(), "cat {g}");
        assert_eq!(
            Guid::of(&o.stdout).to_hex(),
            g,
            "cat {g} hashes to its GUID"
        );
        put(format!("cat {g}"), o.stdout.len().to_string());
    }
    put(
        "stats".into(),
        json(&["stats", "--vault", v, user]).to_string(),
    );
    out
}

/// Three runs with history: flags changed, a message expunged, a folder renamed, a
/// folder deleted, one message in two folders; then a run with nothing changed.
fn history_fixture(name: &str, member_target: u64) -> Fixture {
    let mut fx = Fixture::new(name, member_target);
    fx.sb.create_folder(USER, "Work", None).unwrap();
    fx.sb.create_folder(USER, "Old", None).unwrap();
    for n in 0..6 {
        fx.append(
            None,
            if n % 2 == 0 { &["\\Seen"] } else { &[] },
            n,
            3000 + 700 * n as usize,
        );
    }
    for n in 10..14 {
        fx.append(Some("Work"), &["\\Flagged"], n, 5000);
    }
    fx.append(Some("Work"), &[], 3, 3000 + 700 * 3); // the same bytes as INBOX's 4th
    fx.append(Some("Old"), &[], 20, 2000);
    fx.backup(&["INBOX", "Work", "Old"]);

    let mut c = fx.sb.login(USER).unwrap();
    c.select("INBOX").unwrap();
    c.uid_store("2", "+FLAGS", &["\\Answered", "$Important"])
        .unwrap();
    c.uid_store("3", "+FLAGS", &["\\Deleted"]).unwrap();
    c.expunge().unwrap();
    c.logout().unwrap();
    let mut a = fx.sb.admin().unwrap();
    a.rename(
        &fx.sb.mailbox_name(USER, Some("Work")),
        &fx.sb.mailbox_name(USER, Some("Projects")),
    )
    .unwrap();
    a.logout().unwrap();
    let mut c = fx.sb.login(USER).unwrap();
    c.delete(&fx.sb.user_mailbox_name(Some("Old"))).unwrap();
    c.logout().unwrap();
    fx.append(None, &[], 30, 4000);
    fx.backup(&["INBOX", "Projects"]);
    fx.backup(&["INBOX", "Projects"]);
    fx
}

#[test]
fn reindex_from_the_archive_alone_gives_identical_answers() {
    let fx = history_fixture("reindex", 16 << 20);
    let v = fx.vault.to_str().unwrap();

    // History as the catalog tells it.
    let ls1 = json(&["ls", "--vault", v, USER, "INBOX", "--run", "1"]);
    let ls2 = json(&["ls", "--vault", v, USER, "INBOX"]);
    let uids = |j: &serde_json::Value| -> Vec<(u64, bool, Vec<String>)> {
        j["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["uid"].as_u64().unwrap(),
                    m["expunged"].as_bool().unwrap(),
                    m["flags"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|f| f.as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect()
    };
    let one = uids(&ls1);
    let two = uids(&ls2);
    assert_eq!(one.len(), 6);
    assert!(one.iter().all(|(_, x, _)| !x));
    assert_eq!(one[0].2, ["\\Seen"]);
    assert!(one[1].2.is_empty());
    let u2 = two.iter().find(|m| m.0 == 2).unwrap();
    assert_eq!(u2.2, vec!["\\Answered", "$Important"]);
    let u3 = two.iter().find(|m| m.0 == 3).unwrap();
    assert!(
        u3.1,
        "uid 3 is expunged at run 2 (Cyrus keeps the file): {two:?}"
    );
    assert_eq!(two.last().unwrap().0, 7, "the new message");
    // The expunged message is still readable as of run 1.
    let o = cyrvault(&["cat", "--vault", v, USER, "INBOX", "3", "--run", "1"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, message(2, 3000 + 1400));
    // --at picks the run that had started by then.
    let at = admin::format_time(fx.t0 + 1500);
    assert_eq!(json(&["ls", "--vault", v, USER, "--at", &at])["run"], 1);
    // The renamed folder: one uniqueid, two names; the deleted one is shown as such.
    let show = json(&["show", "--vault", v, USER]);
    let folders = show["folders"].as_array().unwrap();
    let projects = folders.iter().find(|f| f["name"] == "Projects").unwrap();
    let names: Vec<&str> = projects["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Work", "Projects"]);
    let old = folders.iter().find(|f| f["name"] == "Old").unwrap();
    assert_eq!(old["deleted"], true);
    assert_eq!(old["last_run"], 1);
    let runs = show["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0]["messages_added"], 11, "12 appends, one duplicate");
    assert_eq!(runs[1]["messages_added"], 1);
    assert_eq!(runs[2]["messages_added"], 0);
    // Nothing is wrong.
    let ver = json(&["verify", "--vault", v, USER]);
    assert_eq!(ver["ok"], true, "{ver}");

    let before = answers(&fx);
    let dump_before = Catalog::open_existing(&fx.catalog)
        .unwrap()
        .dump_canonical()
        .unwrap();

    // Delete the catalog; rebuild it from the archive alone.
    for suffix in ["", "-wal", "-shm"] {
        let mut p = fx.catalog.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    assert!(
        !cyrvault(&["ls", "--vault", v, &fx.archive.to_string_lossy()])
            .status
            .success()
    );
    let r = json(&["reindex", "--vault", v, &fx.archive.to_string_lossy()]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["users"][0]["runs_indexed"], serde_json::json!([1, 2, 3]));

    let dump_after = Catalog::open_existing(&fx.catalog)
        .unwrap()
        .dump_canonical()
        .unwrap();
    assert_eq!(dump_before, dump_after, "dump_canonical");
    let after = answers(&fx);
    assert_eq!(before.len(), after.len());
    for (k, v) in &before {
        assert_eq!(Some(v), after.get(k), "{k}");
    }
    // A second reindex (catalog present) changes nothing either.
    let _ = json(&["reindex", "--vault", v, "--all"]);
    assert_eq!(
        Catalog::open_existing(&fx.catalog)
            .unwrap()
            .dump_canonical()
            .unwrap(),
        dump_before
    );
    std::fs::remove_dir_all(&fx.vault).unwrap();
}

/// Flip one byte in the middle of a member that holds messages (not the first or last
/// member): `verify` names that member and exactly the messages in it, with their
/// folders and UIDs and runs, exits 65; every other message still reads back.
#[test]
fn a_flipped_byte_is_named_with_exactly_what_it_costs() {
    let fx = history_fixture("damage", 12 << 10);
    let v = fx.vault.to_str().unwrap();
    let scan = archive::scan(&fx.archive).unwrap();
    assert!(scan.damage.is_empty());
    let with_messages: Vec<&MemberInfo> = scan
        .members
        .iter()
        .filter(|m| {
            m.entries
                .iter()
                .all(|e| matches!(archive::parse_entry_name(&e.name), EntryName::Message(_)))
        })
        .collect();
    assert!(with_messages.len() >= 5, "{} members", with_messages.len());
    let victim = with_messages[with_messages.len() / 2];
    let lost: Vec<Guid> = victim
        .entries
        .iter()
        .filter_map(|e| match archive::parse_entry_name(&e.name) {
            EntryName::Message(g) => Some(g),
            _ => None,
        })
        .collect();
    let all_guids: Vec<Guid> = scan
        .members
        .iter()
        .flat_map(|m| &m.entries)
        .filter_map(|e| match archive::parse_entry_name(&e.name) {
            EntryName::Message(g) => Some(g),
            _ => None,
        })
        .collect();
    // Which folder/uid holds each lost message, from the catalog before the damage.
    let cat = Catalog::open_existing(&fx.catalog).unwrap();
    let expect_uses: BTreeMap<String, Vec<(String, u64)>> = cat
        .messages_in_member(victim.offset)
        .unwrap()
        .into_iter()
        .map(|m| {
            let mut u: Vec<(String, u64)> = m
                .uses
                .iter()
                .map(|u| (u.uniqueid.clone(), u64::from(u.uid)))
                .collect();
            u.sort();
            (m.guid.to_hex(), u)
        })
        .collect();
    drop(cat);

    let mut bytes = read(&fx.archive);
    let at = (victim.offset + victim.compressed_len / 2) as usize;
    bytes[at] ^= 0x5a;
    std::fs::write(&fx.archive, &bytes).unwrap();

    let o = cyrvault(&["verify", "--vault", v, USER, "--json"]);
    assert_eq!(
        o.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let u = &j["users"][0];
    assert_eq!(u["ok"], false);
    let damaged = u["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{u}");
    assert_eq!(damaged[0]["offset"], victim.offset);
    assert_eq!(
        damaged[0]["catalog_members"],
        serde_json::json!([victim.offset])
    );
    let got: BTreeMap<String, Vec<(String, u64)>> = damaged[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mut uses: Vec<(String, u64)> = m["uses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| {
                    (
                        x["uniqueid"].as_str().unwrap().into(),
                        x["uid"].as_u64().unwrap(),
                    )
                })
                .collect();
            uses.sort();
            (m["guid"].as_str().unwrap().to_string(), uses)
        })
        .collect();
    let mut want: Vec<String> = lost.iter().map(Guid::to_hex).collect();
    want.sort();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), want);
    assert_eq!(got, expect_uses);
    assert!(
        got.values().all(|u| !u.is_empty()),
        "every lost message names its folder and uid"
    );
    assert!(!damaged[0]["runs"].as_array().unwrap().is_empty());
    // Nothing else is reported: the rest of the archive was checked and is fine.
    assert_eq!(u["mismatches"], serde_json::json!([]), "{u}");
    assert_eq!(
        u["members_checked"].as_u64().unwrap() as usize,
        scan.members.len() - 1
    );
    // The human report names the member too.
    let o = cyrvault(&["verify", "--vault", v, USER]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("damaged member at offset {}", victim.offset)),
        "{text}"
    );
    assert!(text.contains(&lost[0].to_hex()), "{text}");

    // Every message outside the member still reads back.
    for g in all_guids.iter().filter(|g| !lost.contains(g)) {
        let o = cyrvault(&["cat", "--vault", v, USER, &g.to_hex()]);
        assert!(o.status.success(), "cat {g}");
        assert_eq!(Guid::of(&o.stdout), *g);
    }
    // In the damaged member, a message before the flipped byte still inflates and
    // hashes right; the rest fail loudly, never with wrong bytes. verify says which.
    let readable: BTreeMap<String, bool> = damaged[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["guid"].as_str().unwrap().to_string(),
                m["readable"].as_bool().unwrap(),
            )
        })
        .collect();
    let mut failed = 0;
    for g in &lost {
        let o = cyrvault(&["cat", "--vault", v, USER, &g.to_hex()]);
        if o.status.success() {
            assert_eq!(Guid::of(&o.stdout), *g, "cat {g} of a damaged member");
        } else {
            assert!(o.stdout.is_empty());
            failed += 1;
        }
        assert_eq!(readable[&g.to_hex()], o.status.success(), "{g}");
    }
    assert!(
        failed >= 1,
        "the message holding the flipped byte cannot be read"
    );

    // Reindex skips the damaged member, reports it, indexes the rest.
    let o = cyrvault(&["reindex", "--vault", v, USER, "--json"]);
    assert_eq!(o.status.code(), Some(65));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = &j["users"][0];
    assert_eq!(r["damaged"][0]["offset"], victim.offset, "{r}");
    let cat = Catalog::open_existing(&fx.catalog).unwrap();
    for g in &all_guids {
        assert_eq!(cat.has_message(g).unwrap(), !lost.contains(g), "{g}");
    }
    for g in all_guids.iter().filter(|g| !lost.contains(g)) {
        let o = cyrvault(&["cat", "--vault", v, USER, &g.to_hex()]);
        assert!(o.status.success(), "cat {g} after reindex");
    }
    std::fs::remove_dir_all(&fx.vault).unwrap();
}

#[test]
fn stock_tar_extracts_messages_that_hash_to_their_names() {
    let fx = history_fixture("tar", 12 << 10);
    let out = fx.vault.join("x");
    std::fs::create_dir_all(&out).unwrap();
    let o = Command::new("tar")
        .arg("-xzf")
        .arg(&fx.archive)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut n = 0;
    for shard in std::fs::read_dir(out.join("messages")).unwrap() {
        let shard = shard.unwrap().path();
        for f in std::fs::read_dir(&shard).unwrap() {
            let p = f.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            assert_eq!(Guid::of(&read(&p)).to_hex(), name, "{}", p.display());
            assert_eq!(&name[..2], shard.file_name().unwrap().to_str().unwrap());
            n += 1;
        }
    }
    let stats = Catalog::open_existing(&fx.catalog)
        .unwrap()
        .stats()
        .unwrap();
    assert_eq!(n, stats.messages, "every stored message extracted");
    assert!(out.join("runs/000003.json").is_file());
    std::fs::remove_dir_all(&fx.vault).unwrap();
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn cat_reads_one_member_not_the_archive() {
    let mut fx = Fixture::new("onemember", 256 << 10);
    fx.sb.create_folder(USER, "Work", None).unwrap();
    for n in 0..40 {
        fx.append(if n % 3 == 0 { Some("Work") } else { None }, &[], n, 50_000);
    }
    fx.backup(&["INBOX", "Work"]);
    let ua = fx.ua();
    let cat = ua.open_catalog().unwrap();
    let scan = archive::scan(&fx.archive).unwrap();
    let len = std::fs::metadata(&fx.archive).unwrap().len();
    let sizes: HashMap<u64, u64> = scan
        .members
        .iter()
        .map(|m| (m.offset, m.compressed_len))
        .collect();
    let mut n = 0;
    for m in &scan.members {
        for e in &m.entries {
            let EntryName::Message(g) = archive::parse_entry_name(&e.name) else {
                continue;
            };
            let mut r = Counting {
                inner: std::fs::File::open(&fx.archive).unwrap(),
                read: 0,
            };
            let got = admin::read_message(&cat, &mut r, &fx.archive, &g).unwrap();
            assert_eq!(Guid::of(&got.bytes), g);
            let member = sizes[&got.member_offset];
            // At most the member plus one read buffer of look-ahead.
            assert!(
                r.read <= member + 64 * 1024,
                "cat of {g} read {} bytes; its member is {member}, the archive {len}",
                r.read
            );
            n += 1;
        }
    }
    assert_eq!(n, 40);
    let biggest = sizes.values().max().copied().unwrap_or(0);
    assert!(
        scan.members.len() >= 6 && len > 4 * (biggest + 64 * 1024),
        "the archive is many members ({} members, {len} bytes)",
        scan.members.len()
    );
    std::fs::remove_dir_all(&fx.vault).unwrap();
}

#[test]
fn list_stale_and_stats() {
    let mut fx = Fixture::new("list", 16 << 20);
    for n in 0..3 {
        fx.append(None, &[], n, 2000);
    }
    fx.backup(&["INBOX"]);
    fx.backup(&["INBOX"]);
    let v = fx.vault.to_str().unwrap();
    let l = json(&["list", "--vault", v]);
    let u = &l["users"][0];
    assert_eq!(u["user"], USER);
    assert_eq!(u["runs"], 2);
    assert_eq!(u["last_run"], 2);
    assert_eq!(
        u["archive_bytes"].as_u64().unwrap(),
        std::fs::metadata(&fx.archive).unwrap().len()
    );
    // The runs are dated 2025-11: stale by any recent measure, not by a century.
    let o = cyrvault(&["list", "--vault", v, "--stale", "26h", "--json"]);
    assert_eq!(o.status.code(), Some(1), "a stale user is listed: exit 1");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["users"].as_array().unwrap().len(), 1);
    let o = cyrvault(&["list", "--vault", v, "--stale", "36500d", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j["users"].as_array().unwrap().is_empty());

    let s = json(&["stats", "--vault", v]);
    let t = &s["users"][0];
    let unique: u64 = (0..3).map(|n| message(n, 2000).len() as u64).sum();
    assert_eq!(t["unique_bytes"], unique);
    assert_eq!(
        t["raw_bytes"],
        2 * unique,
        "two runs held the same three messages"
    );
    assert_eq!(t["dedup_ratio"], 2.0);
    assert_eq!(t["runs"], 2);
    let stored = t["stored_compressed_bytes"].as_u64().unwrap();
    assert!(stored > 0 && stored < t["archive_bytes"].as_u64().unwrap());
    // Human output of every command works too.
    for args in [
        vec!["list", "--vault", v],
        vec!["show", "--vault", v, USER],
        vec!["ls", "--vault", v, USER],
        vec![
            "ls",
            "--vault",
            v,
            USER,
            "INBOX",
            "--at",
            "2030-01-01 00:00",
        ],
        vec!["stats", "--vault", v],
        vec!["verify", "--vault", v, "--all"],
    ] {
        let o = cyrvault(&args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!o.stdout.is_empty(), "{args:?}");
    }
    // Unknown users, runs and times are errors with a status.
    assert_eq!(
        cyrvault(&["show", "--vault", v, "nobody"]).status.code(),
        Some(66)
    );
    assert_eq!(
        cyrvault(&["ls", "--vault", v, USER, "--run", "9"])
            .status
            .code(),
        Some(66)
    );
    assert_eq!(
        cyrvault(&["ls", "--vault", v, USER, "--at", "last tuesday"])
            .status
            .code(),
        Some(64)
    );
    std::fs::remove_dir_all(&fx.vault).unwrap();
}

/// `mbexamine`'s live records of a mailbox: (uid, guid, IMAP flags, internaldate, size).
fn mbexamine(sb: &Sandbox, mailbox: &str) -> Vec<(u64, String, Vec<String>, i64, u64)> {
    let text = sb.mbexamine(mailbox).unwrap();
    let after = |line: &str, key: &str| -> String {
        let at = line
            .find(key)
            .unwrap_or_else(|| panic!("{key} in {line:?}"))
            + key.len();
        line[at..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(n) = line.strip_prefix("  User Flags:") {
            if n.trim() != "[none]" {
                names = n.split_whitespace().map(str::to_string).collect();
            }
        } else if line.contains("> UID:") {
            let l2 = lines.next().unwrap();
            let _l3 = lines.next().unwrap();
            let l4 = lines.next().unwrap();
            let words: Vec<u32> = l4
                .split_once("USERFLAGS:")
                .unwrap()
                .1
                .split_whitespace()
                .map(|w| u32::from_str_radix(w, 16).unwrap())
                .collect();
            let uf = [words[3], words[2], words[1], words[0]];
            let sys = u32::from_str_radix(&after(l2, "SYSFLAGS:"), 16).unwrap();
            let mut flags: Vec<String> = [
                (1, "\\Answered"),
                (2, "\\Flagged"),
                (4, "\\Deleted"),
                (8, "\\Draft"),
                (16, "\\Seen"),
            ]
            .iter()
            .filter(|(b, _)| sys & b != 0)
            .map(|(_, n)| n.to_string())
            .collect();
            let mut kw: Vec<String> = (0..128usize)
                .filter(|i| uf[i / 32] & (1 << (i % 32)) != 0)
                .map(|i| names[i].clone())
                .collect();
            kw.sort();
            flags.extend(kw);
            let num = |l: &str, k: &str| -> u64 {
                let at = l.find(k).unwrap() + k.len();
                l[at..]
                    .trim_start()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .unwrap()
            };
            out.push((
                num(line, "UID:"),
                after(l2, "GUID:"),
                flags,
                num(line, "INT_DATE:") as i64,
                num(line, "SIZE:"),
            ));
        }
    }
    out
}

/// The real pipeline: `cyrvault backup` from `cyrvaultd` under Cyrus's master, then the
/// admin commands. `ls` of every folder is what `mbexamine` shows, `cat` of every
/// message hashes to its GUID, and after deleting the catalogs `reindex --all` gives
/// the same answers to list/show/ls/cat/stats and the same canonical dump.
#[test]
fn real_backups_ls_like_mbexamine_and_reindex_identically() {
    let dir = scratch("pipeline");
    let vault = dir.join("vault");
    let sb = Sandbox::start(SandboxOptions {
        name_hint: "admin-pipeline".into(),
        extra_services: vec![cyrvault::sandbox::ServiceLine::tcp(
            "cyrvaultd",
            env!("CARGO_BIN_EXE_cyrvaultd"),
        )],
        ..Default::default()
    })
    .unwrap();
    let addr = sb.service_addrs["cyrvaultd"].to_string();
    for (u, part) in [("alice", None), ("bob", Some("p2"))] {
        sb.create_user(u, part).unwrap();
        sb.create_folder(u, "Work", None).unwrap();
        sb.create_folder(u, "Lists/cyrus", None).unwrap();
        for n in 0..8u32 {
            let folder = [None, Some("Work"), Some("Lists/cyrus")][(n % 3) as usize];
            let flags: &[&str] = if n % 2 == 0 {
                &["\\Seen", "$Label1"]
            } else {
                &[]
            };
            sb.append(
                u,
                folder,
                flags,
                Some(1_700_000_000 + i64::from(n)),
                &message(n, 2500 + 300 * n as usize),
            )
            .unwrap();
        }
    }
    let backup = || {
        let o = Command::new(env!("CARGO_BIN_EXE_cyrvault"))
            .args(["backup", "alice", "bob", "--server", &addr, "--vault"])
            .arg(&vault)
            .arg("--json")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "backup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    backup();
    let mut c = sb.login("alice").unwrap();
    c.select("INBOX").unwrap();
    c.uid_store("1", "+FLAGS", &["\\Flagged"]).unwrap();
    c.uid_store("2", "+FLAGS", &["\\Deleted"]).unwrap();
    c.expunge().unwrap();
    c.rename(
        &sb.user_mailbox_name(Some("Work")),
        &sb.user_mailbox_name(Some("Projects")),
    )
    .unwrap();
    c.logout().unwrap();
    backup();

    let v = vault.to_str().unwrap();
    let list = json(&["list", "--vault", v]);
    let users: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "bob"]);
    let mut checked = 0;
    for user in ["alice", "bob"] {
        let show = json(&["show", "--vault", v, user]);
        for f in show["folders"].as_array().unwrap() {
            let internal = f["names"].as_array().unwrap().last().unwrap()["internal_name"]
                .as_str()
                .unwrap()
                .to_string();
            let name = f["name"].as_str().unwrap();
            let ls = json(&["ls", "--vault", v, user, name]);
            let ours: Vec<(u64, String, Vec<String>, i64, u64)> = ls["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| !m["expunged"].as_bool().unwrap())
                .map(|m| {
                    (
                        m["uid"].as_u64().unwrap(),
                        m["guid"].as_str().unwrap().to_string(),
                        m["flags"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|x| x.as_str().unwrap().to_string())
                            .collect(),
                        m["internaldate"].as_i64().unwrap(),
                        m["size"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                ours,
                mbexamine(&sb, &internal),
                "{user} {name} ({internal})"
            );
            checked += ours.len();
        }
    }
    assert_eq!(checked, 16 - 1, "every message but the expunged one");
    // History through the real pipeline: the rename is one folder with two names, and
    // the expunged message is still there as of run 1.
    let show = json(&["show", "--vault", v, "alice"]);
    let projects = show["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == sb.user_mailbox_name(Some("Projects")).as_str())
        .unwrap_or_else(|| panic!("{show}"));
    assert_eq!(
        projects["names"][0]["name"],
        sb.user_mailbox_name(Some("Work")).as_str()
    );
    let o = cyrvault(&["cat", "--vault", v, "alice", "INBOX", "2", "--run", "1"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, message(3, 2500 + 900));
    assert_eq!(json(&["verify", "--vault", v, "--all"])["ok"], true);

    let before: Vec<BTreeMap<String, String>> = ["alice", "bob"]
        .iter()
        .map(|u| answers_for(v, u, 2))
        .collect();
    let archives = admin::vault_archives(&vault).unwrap();
    let dumps: Vec<String> = archives
        .iter()
        .map(|a| a.open_catalog().unwrap().dump_canonical().unwrap())
        .collect();
    for a in &archives {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = a.catalog.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
    let r = json(&["reindex", "--vault", v, "--all"]);
    assert_eq!(r["ok"], true, "{r}");
    for (a, d) in archives.iter().zip(&dumps) {
        assert_eq!(
            &a.open_catalog().unwrap().dump_canonical().unwrap(),
            d,
            "{}",
            a.user
        );
    }
    for (u, b) in ["alice", "bob"].iter().zip(&before) {
        let after = answers_for(v, u, 2);
        assert_eq!(b.len(), after.len());
        for (k, x) in b {
            assert_eq!(Some(x), after.get(k), "{u}: {k}");
        }
    }
    drop(sb);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A crash between the archive's fsync and the catalog commit leaves a run in the
/// archive that the catalog lacks, maybe with half a member after it: `verify` passes
/// with notes, `reindex` picks the run up. An archive *shorter* than its catalog (cut
/// behind our back) fails `verify`, naming the run.
#[test]
fn verify_tells_a_crash_leftover_from_a_short_archive() {
    let mut fx = Fixture::new("crash", 16 << 20);
    for n in 0..3 {
        fx.append(None, &[], n, 2000);
    }
    fx.backup(&["INBOX"]);
    fx.append(None, &[], 3, 2000);
    fx.backup(&["INBOX"]);
    let v = fx.vault.to_str().unwrap();

    // Run 3's manifest reaches the archive; the process dies before the catalog commit.
    let cat = Catalog::open_existing(&fx.catalog).unwrap();
    let m2 = cat.runs().unwrap()[1].manifest.unwrap();
    let mut f = std::fs::File::open(&fx.archive).unwrap();
    let bytes = archive::read_entry_at(
        &mut f,
        &fx.archive,
        m2.member_offset,
        m2.offset_in_member,
        m2.size,
    )
    .unwrap();
    drop(cat);
    let mut m3 = model::parse_manifest(&bytes).unwrap();
    m3.run = 3;
    m3.started += 1000;
    m3.finished += 1000;
    m3.members = vec![];
    let mut w = ArchiveWriter::open_with(
        &fx.archive,
        WriterOptions {
            committed_len: Some(fx.end),
            ..Default::default()
        },
    )
    .unwrap();
    w.add(
        &run_manifest_entry(&run_id(3)).unwrap(),
        &serde_json::to_vec(&m3).unwrap(),
        0,
    )
    .unwrap();
    let mm = w.finish_member().unwrap();
    drop(w);
    let m3_offset = mm[0].offset;
    // ... and half of a next member (a crash while appending it).
    let whole = read(&fx.archive);
    let member = whole[m3_offset as usize..].to_vec();
    let mut with_tail = whole.clone();
    with_tail.extend_from_slice(&member[..member.len() / 2]);
    std::fs::write(&fx.archive, &with_tail).unwrap();

    let j = json(&["verify", "--vault", v, USER]);
    let u = &j["users"][0];
    assert_eq!(u["ok"], true, "{u}");
    let notes = u["notes"].to_string();
    assert!(
        notes.contains("run 3 is committed in the archive"),
        "{notes}"
    );
    assert!(notes.contains("truncated member"), "{notes}");

    let r = json(&["reindex", "--vault", v, USER]);
    assert_eq!(
        r["users"][0]["runs_indexed"],
        serde_json::json!([1, 2, 3]),
        "{r}"
    );
    assert!(r["users"][0]["truncated_tail"].is_array());
    assert_eq!(json(&["verify", "--vault", v, USER])["ok"], true);
    assert_eq!(json(&["ls", "--vault", v, USER, "INBOX"])["run"], 3);

    // Now the archive is cut behind our back, before run 3's member.
    std::fs::write(&fx.archive, &whole[..m3_offset as usize]).unwrap();
    let o = cyrvault(&["verify", "--vault", v, USER, "--json"]);
    assert_eq!(o.status.code(), Some(65));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mism = j["users"][0]["mismatches"].to_string();
    assert!(mism.contains("run 3"), "{mism}");
    assert!(mism.contains("runs/000003.json"), "{mism}");
    std::fs::remove_dir_all(&fx.vault).unwrap();
}

/// Timings of the admin commands on a ~40 MB archive (debug build; run with
/// `cargo test --test tests admin::measure -- --ignored --nocapture`). The numbers are
/// in doc/admin.md.
#[test]
#[ignore]
fn measure_admin_commands() {
    use std::time::Instant;
    let mut fx = Fixture::new("measure", 16 << 20);
    for f in ["Work", "Lists"] {
        fx.sb.create_folder(USER, f, None).unwrap();
    }
    let t = Instant::now();
    let mut c = fx.sb.login(USER).unwrap();
    for n in 0..700u32 {
        let folder = fx
            .sb
            .user_mailbox_name([None, Some("Work"), Some("Lists")][(n % 3) as usize]);
        let size = [4_000, 12_000, 60_000, 150_000][(n % 4) as usize];
        c.append(&folder, &[], Some(fx.t0 - 86_400), &message(n, size))
            .unwrap();
    }
    c.logout().unwrap();
    eprintln!("appended 700 messages in {:?}", t.elapsed());
    fx.backup(&["INBOX", "Work", "Lists"]);
    let len = std::fs::metadata(&fx.archive).unwrap().len();
    let stats = Catalog::open_existing(&fx.catalog)
        .unwrap()
        .stats()
        .unwrap();
    let v = fx.vault.to_str().unwrap().to_string();
    let time = |args: &[&str]| {
        let t = Instant::now();
        let o = cyrvault(args);
        assert!(o.status.success(), "{args:?}");
        t.elapsed()
    };
    eprintln!(
        "archive {len} bytes, {} messages, {} raw bytes, {} members",
        stats.messages,
        stats.unique_bytes,
        archive::scan(&fx.archive).unwrap().members.len()
    );
    let dv = time(&["verify", "--vault", &v, USER, "--json"]);
    eprintln!(
        "verify: {dv:?} = {:.1} MB/s of message data",
        stats.unique_bytes as f64 / 1e6 / dv.as_secs_f64()
    );
    let dr = time(&["reindex", "--vault", &v, USER, "--json"]);
    eprintln!(
        "reindex: {dr:?} = {:.1} MB/s",
        stats.unique_bytes as f64 / 1e6 / dr.as_secs_f64()
    );
    eprintln!("list: {:?}", time(&["list", "--vault", &v, "--json"]));
    eprintln!("show: {:?}", time(&["show", "--vault", &v, USER, "--json"]));
    eprintln!(
        "ls INBOX: {:?}",
        time(&["ls", "--vault", &v, USER, "INBOX", "--json"])
    );
    eprintln!("stats: {:?}", time(&["stats", "--vault", &v, "--json"]));
    // cat: process wall time, and in-library time and bytes read from the file.
    let ua = fx.ua();
    let cat = ua.open_catalog().unwrap();
    let guids: Vec<Guid> = cat
        .records_at(
            &cat.folder_by_name_at("Lists", 1).unwrap().unwrap().uniqueid,
            1,
        )
        .unwrap()
        .iter()
        .map(|r| r.guid)
        .collect();
    let mut wall = Vec::new();
    let mut lib = Vec::new();
    let mut read_bytes = Vec::new();
    for g in guids.iter().step_by(8) {
        wall.push(time(&["cat", "--vault", &v, USER, &g.to_hex()]));
        let mut r = Counting {
            inner: std::fs::File::open(&fx.archive).unwrap(),
            read: 0,
        };
        let t = Instant::now();
        admin::read_message(&cat, &mut r, &fx.archive, g).unwrap();
        lib.push(t.elapsed());
        read_bytes.push(r.read);
    }
    wall.sort();
    lib.sort();
    read_bytes.sort();
    eprintln!(
        "cat ({} messages): process median {:?} max {:?}; read_message median {:?} max {:?}; \
         bytes read from the archive median {} max {} (archive {len})",
        wall.len(),
        wall[wall.len() / 2],
        wall[wall.len() - 1],
        lib[lib.len() / 2],
        lib[lib.len() - 1],
        read_bytes[read_bytes.len() / 2],
        read_bytes[read_bytes.len() - 1]
    );
    // CYRVAULT_KEEP=1 keeps the vault (to try the commands by hand).
    if std::env::var_os("CYRVAULT_KEEP").is_none() {
        std::fs::remove_dir_all(&fx.vault).unwrap();
    } else {
        eprintln!("vault kept: {}", fx.vault.display());
    }
}
