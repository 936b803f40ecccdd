//! What opening a folder reads, per request (issue #10 items 1 and 4), on a
//! real Cyrus 3.6: `FDATA` reads only the index records of the UIDs it asks for
//! and never opens `annotations.db`; `FMETA` copies that are spilled to
//! temporary files are the same bytes as the files, validated the same way.

use std::io::Read;
use std::time::Duration;

use cyrvault::cyrus::Guid;
use cyrvault::cyrus::config::load;
use cyrvault::cyrus::index::IndexRecord;
use cyrvault::service::backend::CyrusSpool;
use cyrvault::service::session::{Fetch, FolderOpen, MetaFile, Spool as _, Want};
use cyrvault::spool::{Load, Spool};
use cyrvault_host::imap::Arg;
use cyrvault_testkit::sandbox::{Sandbox, SandboxOptions};

fn start(hint: &str) -> Sandbox {
    Sandbox::start(SandboxOptions {
        name_hint: hint.into(),
        ..SandboxOptions::default()
    })
    .unwrap()
}

fn spool(sb: &Sandbox) -> Spool {
    Spool::open(
        load(Some(&sb.imapd_conf), None).unwrap(),
        Duration::from_secs(10),
    )
    .unwrap()
}

/// `kim` with `n` messages in INBOX, every 7th expunged, and mailbox annotations.
fn kim(sb: &Sandbox, n: usize) {
    sb.create_user("kim", None).unwrap();
    let mut c = sb.login("kim").unwrap();
    for i in 0..n {
        let m = format!("Subject: m{i}\r\nMessage-ID: <{i}@t>\r\n\r\nbody {i}\r\n");
        c.append("INBOX", &[], None, m.as_bytes()).unwrap();
    }
    c.select("INBOX").unwrap();
    let gone: Vec<String> = (1..=n).step_by(7).map(|u| u.to_string()).collect();
    c.uid_store(&gone.join(","), "+FLAGS", &["\\Deleted"])
        .unwrap();
    c.expunge().unwrap();
    c.run(&[
        Arg::Atom("SETMETADATA"),
        Arg::Str(b"INBOX"),
        Arg::Atom("(/shared/comment \"for all\")"),
    ])
    .unwrap();
    c.logout().unwrap();
}

fn all_records(sp: &Spool) -> Vec<IndexRecord> {
    let ml = sp.mboxlist().unwrap();
    let f = sp.resolve_folder(&ml, "kim", "INBOX").unwrap();
    sp.open_folder(&f, false).unwrap().records().to_vec()
}

#[test]
fn fdata_reads_only_its_records_and_no_annotations() {
    let sb = start("load-fdata");
    kim(&sb, 1300);
    let sp = spool(&sb);
    let all = all_records(&sp);
    assert!(all.len() > 1100, "{}", all.len());
    let last = all.last().unwrap().uid;
    let ml = sp.mboxlist().unwrap();
    let f = sp.resolve_folder(&ml, "kim", "INBOX").unwrap();
    // Batches: contiguous, sparse across windows, unsorted with duplicates, UIDs
    // of expunged records, UIDs past the end, empty.
    let cases: Vec<Vec<u32>> = vec![
        (1..=600).collect(),
        (1..=last).step_by(97).collect(),
        vec![900, 3, 900, 650, 1, last, 2],
        vec![1, 8, 15, last + 1, last + 500, 0],
        vec![],
    ];
    for uids in &cases {
        let got = sp.open_folder_for(&f, Load::Messages(uids)).unwrap();
        let want: Vec<&IndexRecord> = all.iter().filter(|r| uids.contains(&r.uid)).collect();
        assert_eq!(got.records().iter().collect::<Vec<_>>(), want, "{uids:?}");
        assert!(got.index_file().is_none() && got.annotations_file().is_none());
    }

    // Through the service backend, as a session calls it.
    let backend = CyrusSpool::new(sp.clone(), 64);
    let before = sp.db_reads();
    let uids: Vec<u32> = (1..=300).collect();
    let FolderOpen::Open(mut folder) = backend
        .open_folder(b"kim", b"INBOX", Want::Messages(&uids))
        .unwrap()
    else {
        panic!("INBOX missing")
    };
    let paths: Vec<_> = uids.iter().map(|&u| (u, folder.message_file(u))).collect();
    folder.unlock_index();
    let mut sent = 0;
    for (uid, path) in paths {
        let rec = all.iter().find(|r| r.uid == uid);
        let Some(path) = path else {
            assert!(rec.is_none_or(|r| r.is_unlinked()), "uid {uid}");
            continue;
        };
        let Fetch::Open(mut f) = folder.open_message(&path) else {
            panic!("uid {uid} not opened")
        };
        let mut bytes = Vec::new();
        f.reader.read_to_end(&mut bytes).unwrap();
        assert_eq!(Guid::of(&bytes), rec.unwrap().guid, "uid {uid}");
        sent += 1;
    }
    assert!(sent > 250, "{sent}");
    drop(folder);
    let after = sp.db_reads();
    assert_eq!(
        after.annotations_db, before.annotations_db,
        "FDATA read annotations.db"
    );
    // FMETA does read it (so the counter above can tell).
    let FolderOpen::Open(folder) = backend.open_folder(b"kim", b"INBOX", Want::Meta).unwrap()
    else {
        panic!()
    };
    assert!(folder.mailbox_annotations().unwrap().is_some());
    drop(folder);
    assert_eq!(sp.db_reads().annotations_db, after.annotations_db + 1);

    // annotations.db unreadable: FDATA goes on, FMETA says which file is bad.
    let adb = sb.config_dir().join("annotations.db");
    let mut garbage = std::fs::read(&adb).unwrap();
    garbage[..20].copy_from_slice(b"this is no twoskip..");
    std::fs::write(&adb, garbage).unwrap();
    let FolderOpen::Open(mut folder) = backend
        .open_folder(b"kim", b"INBOX", Want::Messages(&[2]))
        .unwrap()
    else {
        panic!()
    };
    let p = folder.message_file(2).unwrap();
    folder.unlock_index();
    assert!(matches!(folder.open_message(&p), Fetch::Open(_)));
    drop(folder);
    let e = backend
        .open_folder(b"kim", b"INBOX", Want::Meta)
        .err()
        .expect("FMETA with a damaged annotations.db");
    assert!(e.to_string().contains("annotations.db"), "{e}");
}

#[test]
fn spilled_meta_copies_are_the_files_bytes() {
    let sb = start("load-spill");
    kim(&sb, 200);
    let sp = spool(&sb).with_spill_threshold(0);
    let ml = sp.mboxlist().unwrap();
    let f = sp.resolve_folder(&ml, "kim", "INBOX").unwrap();
    let full = sp.open_folder(&f, false).unwrap();
    let meta = sp.open_folder_for(&f, Load::Meta).unwrap();
    let spilled = meta.index_file().unwrap();
    assert!(spilled.is_spilled());
    assert_eq!(
        spilled.to_vec().unwrap(),
        full.index_file().unwrap().to_vec().unwrap()
    );
    assert!(meta.records().is_empty());
    assert_eq!(meta.index_header(), full.index_header());
    if let Some(a) = meta.annotations_file() {
        assert!(a.is_spilled() || a.is_empty());
        assert_eq!(
            a.to_vec().unwrap(),
            full.annotations_file().unwrap().to_vec().unwrap()
        );
    }
    drop((full, meta));
    // The service sends them from the copies after every lock is gone.
    let backend = CyrusSpool::new(sp.clone(), 64);
    let FolderOpen::Open(mut folder) = backend.open_folder(b"kim", b"INBOX", Want::Meta).unwrap()
    else {
        panic!()
    };
    assert!(folder.detached());
    folder.unlock_index();
    let Fetch::Open(mut index) = folder.open_meta(MetaFile::Index) else {
        panic!()
    };
    let mut sent = Vec::new();
    index.reader.read_to_end(&mut sent).unwrap();
    assert_eq!(sent.len() as u64, index.stat.size);
    let on_disk = std::fs::read(f.paths.as_ref().unwrap().index.clone()).unwrap();
    assert_eq!(sent, on_disk);
}
