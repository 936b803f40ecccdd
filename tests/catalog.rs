//! The catalog (host/src/catalog) and the run model (host/src/model.rs).
//!
//! - A ten-run history built by hand (flags, expunge, rename, delete, add, a user
//!   rename, one message in five folders over ten runs): `records_at` and `folders_at`
//!   give exactly each run's state.
//! - Reindex: the same archive content (manifests + stored folder meta + message
//!   entries) replayed through a fresh catalog gives an identical `dump_canonical()`.
//! - An uncommitted run leaves no trace; reopen; schema version mismatch.
//! - `records_from_meta` against the Cyrus 3.6.1 fixtures in tests/fixtures/cyrus-index,
//!   with `mbexamine` and `unexpunge -l` output as the oracle.
//! - Timings (printed): commit of a 10,000-record run, `records_at` after 30 runs.

mod cyrus_meta; // records_from_meta vs mbexamine on Cyrus 3.6.1 fixtures
mod timing; // 10,000-record runs, records_at after 30 runs

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use cyrvault::cyrus::Guid;
use cyrvault_host::ErrorKind;
use cyrvault_host::catalog::{
    Catalog, CatalogError, FolderMeta, FolderRef, MemberRow, MetaEntry, RunHeader, RunParts, RunTx,
    SCHEMA_VERSION,
};
use cyrvault_host::model::{
    EntryLoc, FolderInRun, FolderState, MANIFEST_FORMAT, RecordState, RunManifest, UserFile,
    UserFileKind, UserStateRef,
};

// ---------------------------------------------------------------------------
// scratch directories

fn scratch(name: &str) -> PathBuf {
    let p: PathBuf = [
        env!("CARGO_TARGET_TMPDIR"),
        "catalog",
        &format!("{name}-{}", std::process::id()),
    ]
    .iter()
    .collect();
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

// ---------------------------------------------------------------------------
// a simulated mailbox and the archive a backup of it would write

const EXPUNGED: u32 = 1 << 31;
const SEEN: u32 = 1 << 4;
const FLAGGED: u32 = 1 << 1;

fn msg_guid(n: u32) -> Guid {
    Guid::of(format!("message {n}").as_bytes())
}

fn rec(uid: u32, n: u32, modseq: u64) -> RecordState {
    RecordState {
        uid,
        guid: msg_guid(n),
        system_flags: 0,
        keywords: vec![],
        internaldate: 1_700_000_000 + i64::from(n),
        size: 1000 + u64::from(n),
        modseq,
        last_updated: 1_700_000_000 + modseq as i64,
        savedate: 0,
    }
}

/// Run `tx` holds the messages of `recs` (in one member at `offset`), as a backup adds
/// them before its folders: the catalog refuses a record whose message is not held.
fn hold(tx: &mut RunTx<'_>, offset: u64, recs: &[RecordState]) {
    tx.add_member(&MemberRow {
        offset,
        compressed_len: 1,
        uncompressed_len: 1,
        crc32: None,
    })
    .unwrap();
    for (i, r) in recs.iter().enumerate() {
        let loc = EntryLoc {
            member_offset: offset,
            offset_in_member: i as u64 * 2048,
            size: r.size,
        };
        tx.add_message(&r.guid, &loc).unwrap();
    }
}

#[derive(Clone, Debug, PartialEq)]
struct SimFolder {
    name: String,
    uidvalidity: u32,
    records: Vec<RecordState>,
}

impl SimFolder {
    fn new(name: &str, records: Vec<RecordState>) -> Self {
        SimFolder {
            name: name.into(),
            uidvalidity: 42,
            records,
        }
    }
    fn state(&self) -> FolderState {
        FolderState {
            uidvalidity: self.uidvalidity,
            highestmodseq: self.records.iter().map(|r| r.modseq).max().unwrap_or(0),
            last_uid: self.records.iter().map(|r| r.uid).max().unwrap_or(0),
            exists: self.records.iter().filter(|r| !r.is_expunged()).count() as u32,
            num_records: self.records.len() as u32,
            ..Default::default()
        }
    }
    fn rec_mut(&mut self, uid: u32) -> &mut RecordState {
        self.records.iter_mut().find(|r| r.uid == uid).unwrap()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Sim {
    user: String,
    folders: BTreeMap<String, SimFolder>,
}

/// What the archive holds after the runs: per run its members, message entries,
/// folder meta (records as `records_from_meta` would give them) and manifest.
#[derive(Default)]
struct Archive {
    runs: Vec<ArchivedRun>,
}

struct ArchivedRun {
    member: MemberRow,
    messages: Vec<(Guid, EntryLoc)>,
    folder_meta: BTreeMap<String, (FolderMeta, Vec<RecordState>)>,
    user_files: Vec<(UserFile, EntryLoc)>,
    manifest: RunManifest,
    manifest_loc: EntryLoc,
}

fn internal(user: &str, name: &str) -> String {
    if name == "INBOX" {
        format!("user.{user}")
    } else {
        format!("user.{user}.{}", name.replace('/', "."))
    }
}

/// One incremental backup of `sim` as run `run`: what a backup pipeline does, with the
/// catalog deciding what is unchanged and which messages are missing.
fn backup(cat: &mut Catalog, archive: &mut Archive, run: u64, sim: &Sim) {
    let member_offset = run * 100_000;
    let mut pos = 0u64;
    let mut next_loc = |size: u64| {
        let l = EntryLoc {
            member_offset,
            offset_in_member: pos,
            size,
        };
        pos += 512 + size.div_ceil(512) * 512;
        l
    };
    // decide, before the transaction, as the pipeline would
    let mut messages = Vec::new();
    let mut all: Vec<Guid> = Vec::new();
    for f in sim.folders.values() {
        all.extend(f.records.iter().map(|r| r.guid));
    }
    let missing = cat.missing_guids(&all).unwrap();
    for g in &missing {
        let size = sim
            .folders
            .values()
            .flat_map(|f| &f.records)
            .find(|r| r.guid == *g)
            .unwrap()
            .size;
        messages.push((*g, next_loc(size)));
    }
    let mut folders = Vec::new();
    let mut folder_meta = BTreeMap::new();
    for (uniqueid, f) in &sim.folders {
        let state = f.state();
        let last = cat.folder_state_last(uniqueid).unwrap();
        let changed = last.as_ref().is_none_or(|l| !l.same_content(&state));
        let snapshot_run = if changed {
            let meta = FolderMeta {
                header: Some(next_loc(300)),
                index: Some(next_loc(200 + 100 * f.records.len() as u64)),
                annotations: None,
                state: Some(next_loc(250)),
            };
            folder_meta.insert(uniqueid.clone(), (meta, f.records.clone()));
            run
        } else {
            let prev = archive.runs.last().unwrap();
            prev.manifest
                .folders
                .iter()
                .find(|x| &x.uniqueid == uniqueid)
                .unwrap()
                .snapshot_run
        };
        folders.push(FolderInRun {
            uniqueid: uniqueid.clone(),
            name: f.name.clone(),
            internal_name: internal(&sim.user, &f.name),
            deleted: false,
            state,
            snapshot_run,
            deleted_at: None,
        });
    }
    let prev_live: Vec<String> = archive
        .runs
        .last()
        .map(|r| {
            r.manifest
                .folders
                .iter()
                .filter(|f| !f.deleted)
                .map(|f| f.uniqueid.clone())
                .collect()
        })
        .unwrap_or_default();
    for u in prev_live {
        if !sim.folders.contains_key(&u) {
            let prev = archive.runs.last().unwrap();
            let old = prev
                .manifest
                .folders
                .iter()
                .find(|f| f.uniqueid == u)
                .unwrap();
            folders.push(FolderInRun {
                deleted: true,
                ..old.clone()
            });
        }
    }
    // user files change only at run 1 and 5
    let user_snapshot = if run < 5 { 1 } else { 5 };
    let user_files = if run == 1 || run == 5 {
        vec![
            (
                UserFile {
                    kind: UserFileKind::Seen,
                    name: "seen".into(),
                    active: false,
                },
                next_loc(64),
            ),
            (
                UserFile {
                    kind: UserFileKind::Sieve,
                    name: "main".into(),
                    active: true,
                },
                next_loc(128),
            ),
        ]
    } else {
        archive.runs.last().unwrap().user_files.clone()
    };
    let manifest_loc = next_loc(2000);
    let member = MemberRow {
        offset: member_offset,
        compressed_len: pos / 3,
        uncompressed_len: pos,
        crc32: Some(run as u32 * 7),
    };
    let manifest = RunManifest {
        format: MANIFEST_FORMAT,
        run,
        user: sim.user.clone(),
        started: 1_800_000_000 + run as i64 * 3600,
        finished: 1_800_000_000 + run as i64 * 3600 + 60,
        server: "imap1:2005".into(),
        tool_version: "test".into(),
        folders,
        user_state: Some(UserStateRef {
            snapshot_run: user_snapshot,
            files: user_files.iter().map(|(f, _)| f.clone()).collect(),
        }),
        members: vec![member_offset],
    };
    let ar = ArchivedRun {
        member,
        messages,
        folder_meta,
        user_files,
        manifest,
        manifest_loc,
    };
    apply(cat, &ar);
    archive.runs.push(ar);
}

/// Write one archived run into a catalog: used by the backup above and by reindex,
/// which has only the archive's content (manifest, entries, stored meta).
fn apply(cat: &mut Catalog, ar: &ArchivedRun) {
    let m = &ar.manifest;
    let mut tx = cat
        .begin_run(&RunHeader {
            run: m.run,
            user: m.user.clone(),
            started: m.started,
            finished: m.finished,
            server: m.server.clone(),
            tool_version: m.tool_version.clone(),
            manifest: Some(ar.manifest_loc),
        })
        .unwrap();
    tx.add_member(&ar.member).unwrap();
    for (g, l) in &ar.messages {
        assert!(tx.add_message(g, l).unwrap());
    }
    for f in &m.folders {
        if f.deleted {
            tx.folder_gone(&f.uniqueid).unwrap();
        } else if f.snapshot_run == m.run {
            let (meta, recs) = &ar.folder_meta[&f.uniqueid];
            tx.folder_snapshot(FolderRef::from(f), &f.state, recs, meta)
                .unwrap();
        } else {
            tx.folder_unchanged(FolderRef::from(f)).unwrap();
        }
    }
    let us = m.user_state.as_ref().unwrap();
    tx.user_state(us.snapshot_run, &ar.user_files).unwrap();
    tx.commit().unwrap();
}

/// The ten runs of the history test; returns the mailbox as it was at each run.
fn ten_runs() -> Vec<Sim> {
    let mut s = Sim {
        user: "bob".into(),
        ..Default::default()
    };
    let shared = 100; // message 100 lives in five folders for all ten runs
    s.folders.insert(
        "u-inbox".into(),
        SimFolder::new(
            "INBOX",
            (1..=5)
                .map(|i| rec(i, i, 10 + u64::from(i)))
                .chain([rec(6, shared, 16)])
                .collect(),
        ),
    );
    s.folders.insert(
        "u-sent".into(),
        SimFolder::new("Sent", vec![rec(1, 6, 3), rec(2, 7, 4), rec(3, shared, 5)]),
    );
    s.folders.insert(
        "u-lists".into(),
        SimFolder::new("Lists/cyrus", vec![rec(1, 8, 2), rec(2, shared, 3)]),
    );
    s.folders.insert(
        "u-archive".into(),
        SimFolder::new("Archive", vec![rec(1, shared, 2)]),
    );
    s.folders.insert(
        "u-trash".into(),
        SimFolder::new("Trash", vec![rec(1, shared, 2)]),
    );
    s.folders
        .insert("u-old".into(), SimFolder::new("Old", vec![rec(1, 9, 2)]));
    let mut out = vec![s.clone()];
    // run 2: flags
    {
        let i = s.folders.get_mut("u-inbox").unwrap();
        let r = i.rec_mut(1);
        r.system_flags |= SEEN;
        r.modseq = 20;
        let r = i.rec_mut(2);
        r.keywords = vec!["$Label1".into(), "Work".into()];
        r.modseq = 21;
    }
    out.push(s.clone());
    // run 3: expunge uid 3 (file still there)
    {
        let r = s.folders.get_mut("u-inbox").unwrap().rec_mut(3);
        r.system_flags |= EXPUNGED;
        r.modseq = 22;
    }
    out.push(s.clone());
    // run 4: rename Lists/cyrus, delete Old
    s.folders.get_mut("u-lists").unwrap().name = "Lists/cyrus-devel".into();
    s.folders.remove("u-old");
    out.push(s.clone());
    // run 5: expunged uid 3 unlinked (gone from the index); new folder, with a copy
    {
        let i = s.folders.get_mut("u-inbox").unwrap();
        i.records.retain(|r| r.uid != 3);
    }
    s.folders.insert(
        "u-new".into(),
        SimFolder::new("New", vec![rec(1, 10, 30), rec(2, 1, 31)]),
    );
    out.push(s.clone());
    // run 6: the user is renamed on the server; nothing else changes
    s.user = "robert".into();
    out.push(s.clone());
    // run 7: new mail
    s.folders
        .get_mut("u-inbox")
        .unwrap()
        .records
        .push(rec(7, 11, 40));
    out.push(s.clone());
    // run 8: nothing
    out.push(s.clone());
    // run 9: a flag in Sent; Trash gets a new uidvalidity (reconstructed), same message
    {
        let r = s.folders.get_mut("u-sent").unwrap().rec_mut(1);
        r.system_flags |= FLAGGED;
        r.modseq = 50;
        let t = s.folders.get_mut("u-trash").unwrap();
        t.uidvalidity = 43;
    }
    out.push(s.clone());
    // run 10: nothing
    out.push(s.clone());
    out
}

fn build(path: &Path) -> (Catalog, Archive, Vec<Sim>) {
    let sims = ten_runs();
    let mut cat = Catalog::open(path).unwrap();
    let mut archive = Archive::default();
    for (i, s) in sims.iter().enumerate() {
        backup(&mut cat, &mut archive, i as u64 + 1, s);
    }
    (cat, archive, sims)
}

// ---------------------------------------------------------------------------

#[test]
fn every_run_reads_back_exactly() {
    let dir = scratch("history");
    let (cat, _archive, sims) = build(&dir.join("bob.sqlite"));
    assert_eq!(cat.runs().unwrap().len(), 10);
    let mut deleted_seen = false;
    for (i, sim) in sims.iter().enumerate() {
        let run = i as u64 + 1;
        let folders = cat.folders_at(run).unwrap();
        let live: BTreeMap<String, String> = folders
            .iter()
            .filter(|f| !f.deleted)
            .map(|f| (f.uniqueid.clone(), f.name.clone()))
            .collect();
        let want: BTreeMap<String, String> = sim
            .folders
            .iter()
            .map(|(u, f)| (u.clone(), f.name.clone()))
            .collect();
        assert_eq!(live, want, "run {run}");
        for (u, f) in &sim.folders {
            assert_eq!(cat.records_at(u, run).unwrap(), f.records, "{u} run {run}");
            let fa = cat.folder_by_name_at(&f.name, run).unwrap().unwrap();
            assert_eq!(&fa.uniqueid, u);
            assert_eq!(fa.internal_name, internal(&sim.user, &f.name));
        }
        // the deleted folder is listed as deleted from run 4 on, readable at run 3
        if let Some(old) = folders.iter().find(|f| f.uniqueid == "u-old") {
            assert!(old.deleted == (run >= 4), "run {run}");
            if old.deleted {
                deleted_seen = true;
                assert_eq!(old.last_run, 3);
                assert_eq!(old.name, "Old");
                assert!(cat.records_at("u-old", run).unwrap().is_empty());
                assert_eq!(cat.records_at("u-old", old.last_run).unwrap().len(), 1);
            }
        }
        assert_eq!(cat.runs().unwrap()[i].user, sim.user);
    }
    assert!(deleted_seen);
    // expunged-but-present record at run 3 and 4, gone at 5; readable by guid
    let r3 = cat.records_at("u-inbox", 3).unwrap();
    assert!(r3.iter().find(|r| r.uid == 3).unwrap().is_expunged());
    assert!(
        !cat.records_at("u-inbox", 5)
            .unwrap()
            .iter()
            .any(|r| r.uid == 3)
    );
    assert!(cat.has_message(&msg_guid(3)).unwrap());
    // rename history
    let h = cat.folder_history("u-lists").unwrap();
    let spans: Vec<(&str, &str, u64, Option<u64>)> = h
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.internal_name.as_str(),
                s.from_run,
                s.to_run,
            )
        })
        .collect();
    // the user rename at run 6 changes the internal name only
    assert_eq!(
        spans,
        [
            ("Lists/cyrus", "user.bob.Lists.cyrus", 1, Some(4)),
            (
                "Lists/cyrus-devel",
                "user.bob.Lists.cyrus-devel",
                4,
                Some(6)
            ),
            (
                "Lists/cyrus-devel",
                "user.robert.Lists.cyrus-devel",
                6,
                None
            ),
        ]
    );
    assert!(cat.folder_by_name_at("Lists/cyrus", 4).unwrap().is_none());
    // run_at: runs start at 1_800_000_000 + run*3600
    assert_eq!(cat.run_at(1_800_000_000).unwrap(), None);
    assert_eq!(cat.run_at(1_800_000_000 + 3600).unwrap(), Some(1));
    assert_eq!(cat.run_at(1_800_000_000 + 5 * 3600 + 100).unwrap(), Some(5));
    assert_eq!(cat.last_run().unwrap().unwrap().run, 10);
    // unchanged folders keep their snapshot run; the stored state is the folder's
    let snap = cat.folder_snapshot_at("u-archive", 10).unwrap().unwrap();
    assert_eq!(snap.snapshot_run, 1);
    assert_eq!(snap.state, sims[9].folders["u-archive"].state());
    assert_eq!(
        cat.folder_snapshot_at("u-trash", 10)
            .unwrap()
            .unwrap()
            .snapshot_run,
        9
    );
    // user files: snapshot 1 for runs 1..4, 5 after
    let uf = cat.user_files_at(4).unwrap();
    assert_eq!(uf.len(), 2);
    assert!(uf.iter().all(|(s, _, _)| *s == 1));
    assert!(
        cat.user_files_at(7)
            .unwrap()
            .iter()
            .all(|(s, _, _)| *s == 5)
    );
    assert!(cat.integrity_check().unwrap().is_empty());
}

#[test]
fn a_message_in_five_folders_over_ten_runs_is_stored_once() {
    let dir = scratch("dedup");
    let (cat, archive, _sims) = build(&dir.join("bob.sqlite"));
    let shared = msg_guid(100);
    // stored once, in run 1's member
    let loc = cat.message_loc(&shared).unwrap().unwrap();
    assert_eq!(loc.member_offset, 100_000);
    let stored: usize = archive
        .runs
        .iter()
        .map(|r| r.messages.iter().filter(|(g, _)| *g == shared).count())
        .sum();
    assert_eq!(stored, 1);
    // what a damaged member 1 affects: message 100 in five folders, one record each,
    // except Trash which got a new version at run 9 (uidvalidity change is folder
    // state, not record state: still one record)
    let uses = cat.messages_in_member(100_000).unwrap();
    let m = uses.iter().find(|m| m.guid == shared).unwrap();
    let folders: std::collections::BTreeSet<&str> =
        m.uses.iter().map(|u| u.uniqueid.as_str()).collect();
    assert_eq!(
        folders.into_iter().collect::<Vec<_>>(),
        ["u-archive", "u-inbox", "u-lists", "u-sent", "u-trash"]
    );
    assert!(m.uses.iter().all(|u| u.from_run == 1 && u.to_run.is_none()));
    // messages first stored in run 1: 1..=9 and 100
    assert_eq!(uses.len(), 10);
    // and the meta in that member: run 1's manifest, every folder's first snapshot
    // (Archive's is used by all ten runs), the user files used by runs 1..=4
    let meta = cat.meta_in_member(100_000).unwrap();
    let runs_of = |e: MetaEntry| meta.iter().find(|m| m.entry == e).map(|m| m.runs.clone());
    assert_eq!(runs_of(MetaEntry::Manifest), Some(vec![1]));
    assert_eq!(
        runs_of(MetaEntry::FolderIndex("u-archive".into())),
        Some((1..=10).collect())
    );
    assert_eq!(
        runs_of(MetaEntry::FolderState("u-inbox".into())),
        Some(vec![1])
    );
    assert_eq!(
        runs_of(MetaEntry::UserFile(UserFileKind::Sieve, "main".into())),
        Some(vec![1, 2, 3, 4])
    );
    assert_eq!(
        runs_of(MetaEntry::FolderAnnotations("u-inbox".into())),
        None
    );
    assert!(meta.iter().all(|m| m.snapshot_run == 1));
    let st = cat.stats().unwrap();
    assert_eq!(st.runs, 10);
    assert_eq!(st.folders, 7);
    assert_eq!(st.messages, 12); // 1..=11 and 100
    let sizes: u64 = (1u32..=11).chain([100]).map(|n| 1000 + u64::from(n)).sum();
    assert_eq!(st.unique_bytes, sizes);
    // raw bytes: message 100 alone counts 5 folders x 10 runs
    assert!(st.raw_bytes >= 50 * 1100);
    let stored_total: u64 = archive.runs.iter().map(|r| r.member.compressed_len).sum();
    assert_eq!(st.stored_compressed_bytes, stored_total);
    // the incremental pull asks only for what is missing
    let new = msg_guid(999);
    assert_eq!(cat.missing_guids(&[shared, new, new]).unwrap(), vec![new]);
}

#[test]
fn reindex_from_the_archive_gives_the_same_catalog() {
    let dir = scratch("reindex");
    let path = dir.join("bob.sqlite");
    let (cat, archive, _) = build(&path);
    let incremental = cat.dump_canonical().unwrap();
    drop(cat);
    // reindex: only manifests, stored meta and message entries are used
    let mut fresh = Catalog::create_fresh(&path).unwrap();
    assert!(fresh.path().ends_with("bob.sqlite.new"));
    // through Catalog::write_run (the backup above made the RunTx calls by hand)
    for ar in &archive.runs {
        // what reindex has: the manifest as read back from the archive
        let json = serde_json::to_vec(&ar.manifest).unwrap();
        let manifest = cyrvault_host::model::parse_manifest(&json).unwrap();
        assert_eq!(manifest, ar.manifest);
        let snapshots: HashMap<String, (FolderMeta, Vec<RecordState>)> = ar
            .folder_meta
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fresh
            .write_run(
                &manifest,
                &RunParts {
                    manifest_loc: Some(ar.manifest_loc),
                    members: &[ar.member],
                    messages: &ar.messages,
                    snapshots: &snapshots,
                    user_files: &ar.user_files,
                },
            )
            .unwrap();
    }
    // the old catalog is still whole until install
    assert_eq!(
        Catalog::open(&path).unwrap().dump_canonical().unwrap(),
        incremental
    );
    // the comparison is not vacuous: one flag different in one stored snapshot shows
    let other_dir = scratch("reindex-differs");
    let mut other = Catalog::open(&other_dir.join("c.sqlite")).unwrap();
    for (i, ar) in archive.runs.iter().enumerate() {
        let mut snapshots: HashMap<String, (FolderMeta, Vec<RecordState>)> = ar
            .folder_meta
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if i == 1 {
            snapshots.get_mut("u-inbox").unwrap().1[0].system_flags ^= FLAGGED;
        }
        let parts = RunParts {
            manifest_loc: Some(ar.manifest_loc),
            members: &[ar.member],
            messages: &ar.messages,
            snapshots: &snapshots,
            user_files: &ar.user_files,
        };
        if i == 2 {
            // a changed folder without its snapshot is refused, and nothing commits
            let empty = HashMap::new();
            let e = other
                .write_run(
                    &ar.manifest,
                    &RunParts {
                        snapshots: &empty,
                        ..parts
                    },
                )
                .unwrap_err();
            assert!(
                e.to_string()
                    .contains("changed but its snapshot is missing"),
                "{e}"
            );
            assert_eq!(other.last_run().unwrap().unwrap().run, 2);
        }
        other.write_run(&ar.manifest, &parts).unwrap();
    }
    let differs = other.dump_canonical().unwrap();
    assert_ne!(differs, incremental);
    assert_eq!(differs.lines().count(), incremental.lines().count() + 1);

    let rebuilt = fresh.install().unwrap();
    assert_eq!(rebuilt.path(), path);
    assert!(!dir.join("bob.sqlite.new").exists());
    let again = rebuilt.dump_canonical().unwrap();
    assert_eq!(again, incremental);
    assert!(again.contains("[records]"));
    drop(rebuilt);
    // and it still opens as a normal catalog afterwards
    assert_eq!(
        Catalog::open(&path).unwrap().dump_canonical().unwrap(),
        incremental
    );
}

#[test]
fn an_uncommitted_run_leaves_no_trace() {
    let dir = scratch("rollback");
    let path = dir.join("c.sqlite");
    let mut cat = Catalog::open(&path).unwrap();
    let mut archive = Archive::default();
    let sims = ten_runs();
    backup(&mut cat, &mut archive, 1, &sims[0]);
    let before = cat.dump_canonical().unwrap();
    {
        let mut tx = cat
            .begin_run(&RunHeader {
                run: 2,
                user: "bob".into(),
                started: 1,
                finished: 2,
                server: "s".into(),
                tool_version: "t".into(),
                manifest: None,
            })
            .unwrap();
        tx.add_member(&MemberRow {
            offset: 200_000,
            compressed_len: 10,
            uncompressed_len: 512,
            crc32: None,
        })
        .unwrap();
        let loc = EntryLoc {
            member_offset: 200_000,
            offset_in_member: 0,
            size: 5,
        };
        tx.add_message(&msg_guid(500), &loc).unwrap();
        tx.folder_snapshot(
            FolderRef {
                uniqueid: "u-inbox",
                name: "INBOX",
                internal_name: "user.bob",
                deleted_at: None,
            },
            &FolderState::default(),
            &[rec(1, 500, 99)],
            &FolderMeta::default(),
        )
        .unwrap();
        tx.folder_gone("u-sent").unwrap();
        // dropped here without commit
    }
    assert_eq!(cat.dump_canonical().unwrap(), before);
    drop(cat);
    let cat = Catalog::open(&path).unwrap();
    assert_eq!(cat.dump_canonical().unwrap(), before);
    assert!(!cat.has_message(&msg_guid(500)).unwrap());
    assert_eq!(cat.last_run().unwrap().unwrap().run, 1);
}

#[test]
fn reopen_keeps_everything_and_runs_must_increase() {
    let dir = scratch("reopen");
    let path = dir.join("c.sqlite");
    let (cat, mut archive, sims) = build(&path);
    let dump = cat.dump_canonical().unwrap();
    drop(cat);
    let mut cat = Catalog::open(&path).unwrap();
    assert_eq!(cat.dump_canonical().unwrap(), dump);
    let e = cat
        .begin_run(&RunHeader {
            run: 10,
            user: "x".into(),
            started: 0,
            finished: 0,
            server: String::new(),
            tool_version: String::new(),
            manifest: None,
        })
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Software);
    assert!(
        e.to_string()
            .contains("run 10 is not after the last committed run 10"),
        "{e}"
    );
    backup(&mut cat, &mut archive, 11, &sims[9]);
    assert_eq!(cat.last_run().unwrap().unwrap().run, 11);
    // open_existing refuses a missing file and creates nothing
    let missing = dir.join("none.sqlite");
    assert_eq!(
        Catalog::open_existing(&missing).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(!missing.exists());
}

#[test]
fn a_newer_schema_is_refused_naming_both_versions() {
    let dir = scratch("schema");
    let path = dir.join("c.sqlite");
    drop(Catalog::open(&path).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let e = Catalog::open(&path).unwrap_err();
    match &e {
        CatalogError::SchemaTooNew {
            found, supported, ..
        } => {
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
            && msg.contains(&format!("({SCHEMA_VERSION})")),
        "{msg}"
    );
    assert_eq!(e.kind(), ErrorKind::Data);
    // an older, unknown one too
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 0).unwrap();
    }
    assert!(matches!(
        Catalog::open(&path).unwrap_err(),
        CatalogError::SchemaTooOld { found: 0, .. }
    ));
    // a SQLite file that is not a catalog
    let other = dir.join("other.sqlite");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE x (y)")
        .unwrap();
    assert!(matches!(
        Catalog::open(&other).unwrap_err(),
        CatalogError::NotACatalog { .. }
    ));
}

/// Run by `a_process_killed_mid_run_leaves_no_trace` in a child process: begin run 2,
/// write a lot into it, then die without committing or rolling back.
#[test]
#[ignore = "helper, run in a child process by a_process_killed_mid_run_leaves_no_trace"]
fn crash_helper_dies_mid_run() {
    let Some(path) = std::env::var_os("CYRVAULT_CATALOG_CRASH_DB") else {
        return;
    };
    let mut cat = Catalog::open(Path::new(&path)).unwrap();
    let mut tx = cat
        .begin_run(&RunHeader {
            run: 2,
            user: "bob".into(),
            started: 2,
            finished: 2,
            server: "s".into(),
            tool_version: "t".into(),
            manifest: None,
        })
        .unwrap();
    // enough rows that SQLite spills pages into the WAL before the end
    let recs: Vec<RecordState> = (1..=50_000).map(|i| rec(i, 10_000 + i, 1)).collect();
    hold(&mut tx, 1 << 40, &recs);
    tx.folder_snapshot(
        FolderRef {
            uniqueid: "u-inbox",
            name: "INBOX",
            internal_name: "user.bob",
            deleted_at: None,
        },
        &FolderState::default(),
        &recs,
        &FolderMeta::default(),
    )
    .unwrap();
    std::process::abort();
}

#[test]
fn a_process_killed_mid_run_leaves_no_trace() {
    let dir = scratch("killed");
    let path = dir.join("c.sqlite");
    let before = {
        let mut cat = Catalog::open(&path).unwrap();
        let mut archive = Archive::default();
        backup(&mut cat, &mut archive, 1, &ten_runs()[0]);
        cat.dump_canonical().unwrap()
    };
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "catalog::crash_helper_dies_mid_run",
            "--ignored",
            "--nocapture",
        ])
        .env("CYRVAULT_CATALOG_CRASH_DB", &path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the helper must die: {out:?}");
    // the WAL holds the dead transaction's pages; they must not count
    let wal = dir.join("c.sqlite-wal");
    assert!(
        wal.metadata().unwrap().len() > 1_000_000,
        "pages reached the WAL"
    );
    let cat = Catalog::open(&path).unwrap();
    assert_eq!(cat.dump_canonical().unwrap(), before);
    assert!(cat.integrity_check().unwrap().is_empty());
    assert_eq!(cat.last_run().unwrap().unwrap().run, 1);
}
