//! Unit tests of the run writer (`write.rs`): its contract, the held rule, deleted
//! folders, carrying forward, a second writer.

use super::*;
use cyrvault::error::ErrorKind;

fn header(run: u64) -> RunHeader {
    RunHeader {
        run,
        user: "u".into(),
        started: 0,
        finished: 0,
        server: "s".into(),
        tool_version: "t".into(),
        manifest: None,
    }
}

fn folder(uniqueid: &str) -> FolderRef<'_> {
    FolderRef {
        uniqueid,
        name: uniqueid,
        internal_name: uniqueid,
        deleted_at: None,
    }
}

fn record(uid: u32) -> RecordState {
    RecordState {
        uid,
        guid: Guid::of(&uid.to_be_bytes()),
        system_flags: 0,
        keywords: vec![],
        internaldate: 0,
        size: 1,
        modseq: 1,
        last_updated: 0,
        savedate: 0,
    }
}

/// Run `run` begun, with the messages of records 1 and 2 held (one member at
/// `run * 1000`), as a backup adds them before its folders.
fn begin(c: &mut Catalog, run: u64) -> RunTx<'_> {
    let mut tx = c.begin_run(&header(run)).unwrap();
    let offset = run * 1000;
    tx.add_member(&MemberRow {
        offset,
        compressed_len: 10,
        uncompressed_len: 10,
        crc32: None,
    })
    .unwrap();
    for uid in [1, 2] {
        let loc = EntryLoc {
            member_offset: offset,
            offset_in_member: u64::from(uid) * 10,
            size: 1,
        };
        tx.add_message(&record(uid).guid, &loc).unwrap();
    }
    tx
}

/// A catalog in its own scratch directory, removed when the test is done.
struct Scratch {
    catalog: Catalog,
    dir: std::path::PathBuf,
}

impl std::ops::Deref for Scratch {
    type Target = Catalog;
    fn deref(&self) -> &Catalog {
        &self.catalog
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut Catalog {
        &mut self.catalog
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn catalog(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("cyrvault-write-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let catalog = Catalog::open(&dir.join("c.sqlite")).unwrap();
    Scratch { catalog, dir }
}

fn misuse_text(e: CatalogError) -> String {
    assert_eq!(e.kind(), ErrorKind::Software, "{e}");
    e.to_string()
}

#[test]
fn writer_contract_is_enforced() {
    let mut c = catalog("contract");
    let mut tx = begin(&mut c, 1);
    let meta = FolderMeta::default();
    let st = FolderState::default();
    tx.folder_snapshot(folder("a"), &st, &[record(1)], &meta)
        .unwrap();
    let e = tx
        .folder_snapshot(folder("a"), &st, &[], &meta)
        .unwrap_err();
    assert!(misuse_text(e).contains("folder a given twice in run 1"));
    let e = tx.folder_unchanged(folder("never")).unwrap_err();
    assert!(misuse_text(e).contains("never snapshotted"));
    let e = tx
        .folder_snapshot(folder("b"), &st, &[record(1), record(1)], &meta)
        .unwrap_err();
    assert!(misuse_text(e).contains("uid 1 given twice"));
    // "b" is half-written: the run is refused and rolled back
    let e = tx.commit().unwrap_err();
    assert!(misuse_text(e).contains("run 1 had a failed call; it was rolled back"));
    assert!(c.last_run().unwrap().is_none());
    assert!(c.records_at("a", 1).unwrap().is_empty());
}

#[test]
fn a_record_whose_message_is_not_held_is_refused() {
    let mut c = catalog("unheld");
    let meta = FolderMeta::default();
    let st = FolderState::default();
    // Held by this run's member: fine. Uid 3's message is in no member: refused,
    // and the run cannot commit.
    let mut tx = begin(&mut c, 1);
    tx.folder_snapshot(folder("a"), &st, &[record(1), record(2)], &meta)
        .unwrap();
    let e = tx
        .folder_snapshot(folder("b"), &st, &[record(1), record(3)], &meta)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Data, "{e}");
    let want = format!(
        "run 1: folder b uid 3 names message {}, which no member of the archive holds",
        record(3).guid
    );
    assert!(e.to_string().contains(&want), "{e}");
    assert!(tx.commit().is_err());
    assert!(c.last_run().unwrap().is_none());
    // Held by an earlier run: fine; an unchanged record is not looked at again.
    let mut tx = begin(&mut c, 1);
    tx.folder_snapshot(folder("a"), &st, &[record(1)], &meta)
        .unwrap();
    tx.commit().unwrap();
    let mut tx = c.begin_run(&header(2)).unwrap();
    tx.folder_snapshot(folder("a"), &st, &[record(1), record(2)], &meta)
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(c.records_at("a", 2).unwrap(), vec![record(1), record(2)]);
}

#[test]
fn gone_folders_cannot_be_unchanged_or_gone_again() {
    let mut c = catalog("gone");
    let meta = FolderMeta::default();
    let st = FolderState::default();
    let mut tx = begin(&mut c, 1);
    tx.folder_snapshot(folder("a"), &st, &[record(1)], &meta)
        .unwrap();
    tx.commit().unwrap();
    let mut tx = c.begin_run(&header(2)).unwrap();
    tx.folder_gone("a").unwrap();
    tx.commit().unwrap();
    let mut tx = c.begin_run(&header(3)).unwrap();
    let e = tx.folder_gone("a").unwrap_err();
    assert!(misuse_text(e).contains("already deleted in run 2"));
    drop(tx);
    let mut tx = c.begin_run(&header(3)).unwrap();
    let e = tx.folder_unchanged(folder("a")).unwrap_err();
    assert!(misuse_text(e).contains("was deleted in run 2"));
    drop(tx);
    // a deleted folder is not carried forward, and its state is not "last"
    let tx = c.begin_run(&header(3)).unwrap();
    tx.commit().unwrap();
    assert!(c.folder_snapshot_at("a", 3).unwrap().is_none());
    assert!(c.folder_state_last("a").unwrap().is_none());
    assert!(c.records_at("a", 3).unwrap().is_empty());
    assert_eq!(c.records_at("a", 1).unwrap(), vec![record(1)]);
}

#[test]
fn a_folder_that_comes_back_is_deleted_only_while_it_was_gone() {
    let mut c = catalog("back");
    let meta = FolderMeta::default();
    let st = FolderState::default();
    let mut tx = begin(&mut c, 1);
    tx.folder_snapshot(folder("a"), &st, &[record(1)], &meta)
        .unwrap();
    tx.commit().unwrap();
    let mut tx = c.begin_run(&header(2)).unwrap();
    tx.folder_gone("a").unwrap();
    tx.commit().unwrap();
    c.begin_run(&header(3)).unwrap().commit().unwrap();
    let mut tx = begin(&mut c, 4);
    tx.folder_snapshot(folder("a"), &st, &[record(1), record(2)], &meta)
        .unwrap();
    tx.commit().unwrap();
    let at = |run| {
        let f = c.folders_at(run).unwrap();
        assert_eq!(f.len(), 1, "run {run}");
        (f[0].deleted, f[0].last_run)
    };
    assert_eq!(at(1), (false, 1));
    assert_eq!(at(2), (true, 1));
    assert_eq!(at(3), (true, 1));
    assert_eq!(at(4), (false, 4));
    assert_eq!(c.records_at("a", 3).unwrap(), vec![]);
    assert_eq!(c.records_at("a", 4).unwrap(), vec![record(1), record(2)]);
    assert_eq!(c.record_at("a", 1, 1).unwrap(), Some(record(1)));
    assert_eq!(c.record_at("a", 2, 1).unwrap(), None);
    assert_eq!(c.record_at("a", 1, 2).unwrap(), None);
}

#[test]
fn a_second_writer_waits_then_fails_temporarily_and_readers_go_on() {
    let mut a = catalog("busy");
    let mut tx = begin(&mut a, 1);
    tx.folder_snapshot(
        folder("x"),
        &FolderState::default(),
        &[record(1)],
        &FolderMeta::default(),
    )
    .unwrap();
    let path = tx.path.to_path_buf();
    let mut b = Catalog::open(&path).unwrap();
    b.set_busy_timeout(std::time::Duration::from_millis(100))
        .unwrap();
    let t = std::time::Instant::now();
    let e = b.begin_run(&header(2)).err().unwrap();
    assert!(t.elapsed() >= std::time::Duration::from_millis(100));
    assert!(e.is_temporary(), "{e}");
    // WAL: a reader sees the last committed state while the writer works
    assert!(b.last_run().unwrap().is_none());
    tx.commit().unwrap();
    assert_eq!(b.last_run().unwrap().unwrap().run, 1);
    b.begin_run(&header(2)).unwrap().commit().unwrap();
}

#[test]
fn unmentioned_live_folders_are_carried_forward() {
    let mut c = catalog("carry");
    let st = FolderState {
        highestmodseq: 7,
        ..Default::default()
    };
    let mut tx = begin(&mut c, 1);
    tx.folder_snapshot(folder("a"), &st, &[record(1)], &FolderMeta::default())
        .unwrap();
    tx.commit().unwrap();
    c.begin_run(&header(5)).unwrap().commit().unwrap();
    let s = c.folder_snapshot_at("a", 5).unwrap().unwrap();
    assert_eq!((s.snapshot_run, s.state), (1, st));
    assert_eq!(c.records_at("a", 5).unwrap(), vec![record(1)]);
    // run 3 never happened: nothing is valid "at" it beyond what run 1 said
    assert!(c.folder_snapshot_at("a", 3).unwrap().is_none());
}
