//! Timings of the catalog at mailbox scale (printed; run with `--nocapture`): a run of
//! 10,000 new records, and `records_at` on a 10,000-record folder after 30 runs. The
//! results are checked too, so the test fails if the history is wrong.

use std::collections::BTreeMap;
use std::time::Instant;

use cyrvault_host::catalog::{Catalog, FolderMeta, FolderRef, MemberRow, RunHeader};
use cyrvault_host::model::{EntryLoc, FolderState, RecordState};

use super::{SEEN, rec, scratch};

fn big_folder(uid_base: u32, n: u32, modseq: u64) -> Vec<RecordState> {
    (1..=n)
        .map(|i| {
            let mut r = rec(i, uid_base + i, modseq);
            if i % 3 == 0 {
                r.keywords = vec!["$Junk".into(), "Work".into()];
            }
            r
        })
        .collect()
}

#[test]
fn timings_10k_records() {
    let dir = scratch("timing");
    let mut cat = Catalog::open(&dir.join("c.sqlite")).unwrap();
    // run 1: 10 folders x 1,000 records, all messages new
    let folders: Vec<Vec<RecordState>> = (0..10).map(|f| big_folder(f * 1000, 1000, 1)).collect();
    let t = Instant::now();
    let header = |run: u64| RunHeader {
        run,
        user: "big".into(),
        started: run as i64,
        finished: run as i64,
        server: "s".into(),
        tool_version: "t".into(),
        manifest: None,
    };
    let mut tx = cat.begin_run(&header(1)).unwrap();
    tx.add_member(&MemberRow {
        offset: 0,
        compressed_len: 1,
        uncompressed_len: 1,
        crc32: None,
    })
    .unwrap();
    for (f, recs) in folders.iter().enumerate() {
        for (i, r) in recs.iter().enumerate() {
            let loc = EntryLoc {
                member_offset: 0,
                offset_in_member: (f * 1000 + i) as u64 * 2048,
                size: r.size,
            };
            tx.add_message(&r.guid, &loc).unwrap();
        }
        let u = format!("f{f}");
        tx.folder_snapshot(
            FolderRef {
                uniqueid: &u,
                name: &u,
                internal_name: &u,
                deleted_at: None,
            },
            &FolderState::default(),
            recs,
            &FolderMeta::default(),
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let commit_10x1k = t.elapsed();

    // runs 2..=31: one 10,000-record folder, 1 % of its records change flags each run
    let mut big = big_folder(100_000, 10_000, 1);
    let mut run_times = Vec::new();
    let mut expected_at = BTreeMap::new();
    for run in 2..=31u64 {
        if run > 2 {
            for k in 0..100 {
                let i = (run as usize * 997 + k * 101) % big.len();
                big[i].system_flags ^= SEEN;
                big[i].modseq = run * 1000 + k as u64;
            }
        }
        let mut tx = cat.begin_run(&header(run)).unwrap();
        if run == 2 {
            // the folder's messages, stored in run 2 (not what is timed)
            super::hold(&mut tx, 1 << 40, &big);
        }
        let t = Instant::now();
        let state = FolderState {
            highestmodseq: run,
            ..Default::default()
        };
        tx.folder_snapshot(
            FolderRef {
                uniqueid: "big",
                name: "Big",
                internal_name: "user.big.Big",
                deleted_at: None,
            },
            &state,
            &big,
            &FolderMeta::default(),
        )
        .unwrap();
        tx.commit().unwrap();
        run_times.push(t.elapsed());
        if run == 2 || run == 16 || run == 31 {
            expected_at.insert(run, big.clone());
        }
    }
    let mut lookups = Vec::new();
    for (run, want) in &expected_at {
        let t = Instant::now();
        let got = cat.records_at("big", *run).unwrap();
        lookups.push((*run, t.elapsed()));
        assert_eq!(&got, want, "run {run}");
    }
    let t = Instant::now();
    let st = cat.stats().unwrap();
    let stats_time = t.elapsed();
    // 10,000 first versions + 29 runs x 100 changes
    assert_eq!(st.record_versions, 10_000 + 10_000 + 29 * 100);
    // the incremental pull's question for 20,000 GUIDs, half of them stored
    let asked: Vec<_> = (0..10)
        .flat_map(|f| big_folder(f * 1000, 1000, 1))
        .chain(big_folder(500_000, 10_000, 1))
        .map(|r| r.guid)
        .collect();
    let t = Instant::now();
    let missing = cat.missing_guids(&asked).unwrap();
    let missing_time = t.elapsed();
    assert_eq!(missing.len(), 10_000);
    eprintln!(
        "catalog timing: commit run of 10 folders x 1,000 records (new): {commit_10x1k:?}; \
         10,000-record folder snapshot commit: first {:?}, 1%-changed runs median {:?}; \
         records_at on the 10,000-record folder after 30 runs: {lookups:?}; \
         missing_guids of 20,000: {missing_time:?}; stats: {stats_time:?}",
        run_times[0],
        {
            let mut v = run_times[1..].to_vec();
            v.sort();
            v[v.len() / 2]
        }
    );
}
