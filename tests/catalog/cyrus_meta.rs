//! `model::records_from_meta` against real Cyrus 3.6.1 files
//! (tests/fixtures/cyrus-index, v12..v17), with `mbexamine` and `unexpunge -l` output
//! saved beside them as the oracle; then those record states through the catalog.

use cyrvault::cyrus::Guid;
use cyrvault_host::catalog::{Catalog, FolderMeta, FolderRef, RunHeader};
use cyrvault_host::model::{RecordState, records_from_meta};

use super::scratch;
use crate::cyrus_index::fixture;
use crate::mbexamine::{parse_unexpunge, record_states};

/// `unexpunge -l`: (uid, size) of the expunged records.
fn unexpunged(text: &str) -> Vec<(u32, u64)> {
    parse_unexpunge(text)
        .into_iter()
        .map(|[uid, size, ..]| (uid as u32, size))
        .collect()
}

#[test]
fn records_from_meta_matches_mbexamine_on_cyrus_3_6_files() {
    for v in 12..=17 {
        let p = format!("v{v}");
        let header = fixture(&format!("{p}.cyrus.header"));
        let index = fixture(&format!("{p}.cyrus.index"));
        let (state, recs) = records_from_meta(&header, &index).unwrap();
        let (ex_state, ex_recs) = record_states(&String::from_utf8_lossy(&fixture(&format!(
            "{p}.mbexamine.txt"
        ))));
        assert_eq!(state.uidvalidity, ex_state.uidvalidity, "{p}");
        assert_eq!(state.highestmodseq, ex_state.highestmodseq, "{p}");
        assert_eq!(state.last_uid, ex_state.last_uid, "{p}");
        assert_eq!(state.exists, ex_state.exists, "{p}");
        assert_eq!(state.generation_no, ex_state.generation_no, "{p}");
        assert_eq!(state.minor_version, v, "{p}");
        assert_eq!(state.index_file_stat, None);
        let live: Vec<RecordState> = recs.iter().filter(|r| !r.is_expunged()).cloned().collect();
        assert_eq!(live, ex_recs, "{p}");
        assert!(
            live.iter().any(|r| !r.keywords.is_empty()),
            "{p}: keywords tested"
        );
        // the expunged record is kept, with the bit, as unexpunge -l lists it
        let exp: Vec<(u32, u64)> = recs
            .iter()
            .filter(|r| r.is_expunged())
            .map(|r| (r.uid, r.size))
            .collect();
        let want = unexpunged(&String::from_utf8_lossy(&fixture(&format!(
            "{p}.unexpunge.txt"
        ))));
        assert_eq!(exp, want, "{p}");
        assert!(!exp.is_empty());
        // GUIDs are the SHA-1 of the message files Cyrus indexed
        for r in &recs {
            assert_eq!(
                r.guid,
                Guid::of(&fixture(&format!("msg-{}.", r.uid))),
                "{p}"
            );
        }
        // an index with a header it was not written with: Cyrus only warns ("Header
        // CRC mismatch", mailbox_lock_index) and names flags from that header; so do we
        let mut other = header.clone();
        let at = other.windows(5).position(|w| w == b"Work ").unwrap();
        other[at..at + 4].copy_from_slice(b"Play");
        let (st2, recs2) = records_from_meta(&other, &index).unwrap();
        assert_eq!(st2, state);
        assert!(
            recs2
                .iter()
                .any(|r| r.keywords.contains(&"Play".to_string()))
        );
        assert!(
            !recs2
                .iter()
                .any(|r| r.keywords.contains(&"Work".to_string()))
        );
    }
}

#[test]
fn records_from_meta_through_the_catalog() {
    // v17 then v16 of the same mailbox as two runs: the second run's diff is about
    // what the conversion changed, and each run reads back exactly.
    let dir = scratch("meta");
    let mut cat = Catalog::open(&dir.join("c.sqlite")).unwrap();
    let mut per_run = Vec::new();
    for (run, p) in [(1u64, "v17"), (2, "v16"), (3, "v12")] {
        let (state, recs) = records_from_meta(
            &fixture(&format!("{p}.cyrus.header")),
            &fixture(&format!("{p}.cyrus.index")),
        )
        .unwrap();
        let mut tx = cat
            .begin_run(&RunHeader {
                run,
                user: "fix".into(),
                started: run as i64,
                finished: run as i64,
                server: "local".into(),
                tool_version: "t".into(),
                manifest: None,
            })
            .unwrap();
        super::hold(&mut tx, run * 1_000_000, &recs);
        tx.folder_snapshot(
            FolderRef {
                uniqueid: "0b1c2d3e-4f50-4a61-8b72-c3d4e5f60718",
                name: "INBOX",
                internal_name: "user.fix",
                deleted_at: None,
            },
            &state,
            &recs,
            &FolderMeta::default(),
        )
        .unwrap();
        tx.commit().unwrap();
        per_run.push((state, recs));
    }
    for (i, (state, recs)) in per_run.iter().enumerate() {
        let run = i as u64 + 1;
        let u = "0b1c2d3e-4f50-4a61-8b72-c3d4e5f60718";
        assert_eq!(&cat.records_at(u, run).unwrap(), recs);
        assert_eq!(
            cat.folder_snapshot_at(u, run).unwrap().unwrap().state,
            *state
        );
    }
}

#[test]
fn unlinked_records_are_skipped_and_storage_bits_masked() {
    use cyrvault::cyrus::index::{
        FLAG_INTERNAL_ARCHIVED, FLAG_INTERNAL_UNLINKED, parse_index, write_index,
    };
    let header = fixture("v17.cyrus.header");
    let mut idx = parse_index(&fixture("v17.cyrus.index")).unwrap();
    let (_, before) = records_from_meta(&header, &write_index(&idx)).unwrap();
    let expunged_uid = before.iter().find(|r| r.is_expunged()).unwrap().uid;
    // Cyrus's cleanup marks the expunged record UNLINKED once its file is gone, and
    // the archive partition sets ARCHIVED on another: the first disappears, the second
    // is unchanged as far as the catalog is concerned.
    for r in &mut idx.records {
        if r.uid == expunged_uid {
            r.system_flags |= FLAG_INTERNAL_UNLINKED;
        } else if r.uid == 1 {
            r.system_flags |= FLAG_INTERNAL_ARCHIVED;
        }
    }
    let (_, after) = records_from_meta(&header, &write_index(&idx)).unwrap();
    let want: Vec<RecordState> = before
        .into_iter()
        .filter(|r| r.uid != expunged_uid)
        .collect();
    assert_eq!(after, want);
}

#[test]
fn damaged_meta_is_a_parse_error_naming_the_file() {
    let header = fixture("v17.cyrus.header");
    let mut index = fixture("v17.cyrus.index");
    let last = index.len() - 10;
    index[last] ^= 0xff; // inside the last record: its CRC no longer matches
    let e = records_from_meta(&header, &index).unwrap_err();
    assert_eq!(e.kind(), cyrvault_host::ErrorKind::Data);
    assert!(e.to_string().starts_with("cyrus.index"), "{e}");
    let e = records_from_meta(&header[..50], &fixture("v17.cyrus.index")).unwrap_err();
    assert!(e.to_string().starts_with("cyrus.header"), "{e}");
}
