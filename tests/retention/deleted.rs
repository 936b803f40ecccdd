//! `--keep-deleted` and folders in Cyrus's delayed-delete area (`DELETED.*`): kept,
//! with what they show, while Cyrus holds them; counted from the user's deletion once
//! `cyr_expire` removed them.

use std::collections::BTreeSet;

use cyrvault::cyrus::Guid;
use cyrvault_host::archive::{EntryName, parse_entry_name, scan};
use cyrvault_host::retention::{self, Count, Policy, PruneOptions};
use cyrvault_testkit::sandbox::MailGen;

use super::{env, make_user, reindex_agrees, run_state, stock_tools_read, verify_green};

const USER: &str = "ella";

fn stored_guids(path: &std::path::Path) -> BTreeSet<Guid> {
    scan(path)
        .unwrap()
        .members
        .iter()
        .flat_map(|m| m.entries.iter())
        .filter_map(|e| match parse_entry_name(&e.name) {
            EntryName::Message(g) => Some(g),
            _ => None,
        })
        .collect()
}

fn now_plus_days(days: i64) -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + days * 86_400
}

#[test]
fn a_folder_cyrus_still_holds_is_kept_then_expires_from_its_deletion() {
    let e = env("fdeleted");
    let mut mail = MailGen::new(16).with_max_size(20_000);
    make_user(&e.sb, USER, &mut mail, 4);
    e.backup(USER);
    let lists = e
        .catalog(USER)
        .folder_by_name_at("INBOX.Lists", 1)
        .unwrap()
        .unwrap();
    let lists_guids: BTreeSet<Guid> = e
        .catalog(USER)
        .records_at(&lists.uniqueid, 1)
        .unwrap()
        .into_iter()
        .map(|r| r.guid)
        .collect();
    assert!(!lists_guids.is_empty());
    // Deleted by the user; Cyrus keeps it in DELETED.* (delete_mode: delayed). Runs 2
    // and 3 back it up as a deleted folder.
    let mut c = e.sb.login(USER).unwrap();
    c.delete("INBOX.Lists").unwrap();
    c.logout().unwrap();
    e.backup(USER);
    e.backup(USER);
    let cat = e.catalog(USER);
    let held = cat
        .folders_at(3)
        .unwrap()
        .into_iter()
        .find(|f| f.uniqueid == lists.uniqueid)
        .expect("the deleted folder is in run 3");
    assert!(held.present(3) && held.deleted_at.is_some(), "{held:?}");
    let run3 = run_state(&cat, 3);
    drop(cat);

    // Two days later, keep the last run and deleted content for one day: runs 1 and 2
    // go, but Cyrus still holds the folder, so run 3 keeps it and what it shows.
    let opts = |keep_last, days| PruneOptions {
        policy: Policy {
            keep_last,
            keep_deleted: Some(86_400),
            ..Policy::default()
        },
        now: Some(now_plus_days(days)),
        ..PruneOptions::default()
    };
    let r = retention::prune(&e.target(USER), &opts(Some(Count::N(1)), 2)).unwrap();
    let mut removed = r.runs_removed.clone();
    removed.sort();
    assert_eq!(removed, vec![1, 2], "{r:?}");
    assert!(r.folders_removed.is_empty(), "{r:?}");
    assert_eq!(r.messages_erased, 0, "{r:?}");
    let cat = e.catalog(USER);
    assert_eq!(run_state(&cat, 3), run3, "run 3 unchanged");
    drop(cat);
    let stored = stored_guids(&e.archive(USER).archive);
    assert!(
        lists_guids.is_subset(&stored),
        "the held folder's messages stay"
    );
    verify_green(&e, USER);
    reindex_agrees(&e, USER);

    // cyr_expire removes it; run 4 finds it gone. D counts from the user's deletion
    // (deleted_at), not from the run that found it gone: at now it stays; two days on
    // it goes, even with run 4 standing for a run made just then.
    e.sb.tool_ok("cyr_expire", &["-D", "0"]).unwrap();
    e.backup(USER);
    let r = retention::prune(&e.target(USER), &opts(None, 0)).unwrap();
    assert!(r.nothing_to_do, "{r:?}");
    let late = PruneOptions {
        run_times: Some([(4, now_plus_days(2))].into_iter().collect()),
        ..opts(None, 2)
    };
    let r = retention::prune(&e.target(USER), &late).unwrap();
    assert_eq!(r.folders_removed.len(), 1, "{r:?}");
    assert_eq!(r.folders_removed[0].uniqueid, lists.uniqueid);
    let cat = e.catalog(USER);
    for run in [3, 4] {
        assert!(
            cat.folders_at(run)
                .unwrap()
                .iter()
                .all(|f| f.uniqueid != lists.uniqueid),
            "run {run}"
        );
    }
    drop(cat);
    let stored = stored_guids(&e.archive(USER).archive);
    assert!(stored.is_disjoint(&lists_guids), "its messages are gone");
    verify_green(&e, USER);
    reindex_agrees(&e, USER);
    stock_tools_read(&e.archive(USER).archive);
}
