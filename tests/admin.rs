//! The admin commands (`cyrvault list/show/ls/cat/verify/reindex/stats`) against
//! archives made from a real Cyrus 3.6 spool, always through the real `cyrvault`
//! binary's `--json` (and its tables).
//!
//! Two sources of archives. `pipeline.rs` uses the real backup (`cyrvault backup` from
//! `cyrvaultd` under Cyrus's master). The other modules drive a backup by hand with
//! the calls the pipeline makes, to control what the archive looks like (small members
//! so a byte can be flipped in a middle one; exact history): the sandbox's own
//! `cyrus.header`, `cyrus.index` and message files are read from the spool (Cyrus is
//! idle between the IMAP changes a test makes), stored with `ArchiveWriter` under the
//! entry names of `doc/archive-format.md`, and committed with `Catalog::write_run`
//! (the one call sequence both backup and reindex use).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cyrvault::cyrus::Guid;
use cyrvault::cyrus::header::parse_header;
use cyrvault_host::admin::{self, UserArchive};
use cyrvault_host::archive::{
    self, ArchiveWriter, EntryName, MemberInfo, WriterOptions, folder_entry, message_entry, run_id,
    run_manifest_entry,
};
use cyrvault_host::catalog::{Catalog, FolderMeta, MemberRow, RunParts};
use cyrvault_host::model::{
    self, EntryLoc, FolderInRun, MANIFEST_FORMAT, RecordState, RunManifest,
};
use cyrvault_testkit::sandbox::{Sandbox, SandboxOptions};

mod damage; // a flipped byte in a middle member; crash leftovers vs a short archive
mod history; // ls/cat --run, renames, deletions, reindex equality, list --stale, stats
mod pipeline; // archives from the real backup pipeline: ls == mbexamine, reindex --all
mod reads; // stock tar, cat reads one member, timings

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

/// The members of a scanned archive that hold messages only (a byte flipped in one of
/// them costs messages and nothing else).
fn message_members(scan: &archive::Scan) -> Vec<&MemberInfo> {
    scan.members
        .iter()
        .filter(|m| {
            m.entries
                .iter()
                .all(|e| matches!(archive::parse_entry_name(&e.name), EntryName::Message(_)))
        })
        .collect()
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
                deleted_at: None,
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
    Command::new(crate::bins::cyrvault())
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
