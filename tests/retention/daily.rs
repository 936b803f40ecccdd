//! 30 daily runs with churn, then `prune --keep-daily 7 --keep-monthly 1`; and
//! `--keep-deleted`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::process::{Command, Stdio};

use cyrvault::cyrus::Guid;
use cyrvault_host::archive::{EntryName, parse_entry_name, scan};
use cyrvault_host::catalog::Catalog;
use cyrvault_host::restore::imap_flags;
use cyrvault_host::retention::{self, Count, Policy, PruneOptions};
use cyrvault_testkit::sandbox::{MailGen, Sandbox};

use super::{
    Env, churn, env, make_user, reindex_agrees, run_state, runs_read_back, stock_tools_read,
    verify_green,
};

const USER: &str = "dora";

/// One message as IMAP shows it: GUID, flags (sorted, no \Recent), internal date.
type Msg = (String, Vec<String>, i64);
/// Folder → its messages, sorted.
type Content = BTreeMap<String, Vec<Msg>>;

/// What `user` has, as the user sees it over IMAP (Cyrus's `#sieve` left out): with
/// `prefix`, only the tree a restore `--into PREFIX` made, under the backed-up names
/// (`INBOX.<prefix>.INBOX` → `INBOX`, `INBOX.<prefix>.Work` → `INBOX.Work`); without,
/// everything.
fn imap_content(sb: &Sandbox, user: &str, prefix: Option<&str>) -> Content {
    let mut c = sb.admin_as(user).unwrap();
    let mut out = Content::new();
    for e in c.list("", "*").unwrap() {
        if e.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Noselect")) || e.name.contains(".#") {
            continue;
        }
        let name = match prefix {
            Some(p) => match e.name.strip_prefix(&format!("INBOX.{p}.")) {
                Some("INBOX") => "INBOX".to_string(),
                Some(rest) => format!("INBOX.{rest}"),
                None => continue,
            },
            None => e.name.clone(),
        };
        let info = c.examine(&e.name).unwrap();
        let mut v: Vec<Msg> = if info.exists == 0 {
            Vec::new()
        } else {
            c.uid_fetch("1:*", "(UID FLAGS INTERNALDATE DIGEST.SHA1)")
                .unwrap()
                .into_iter()
                .map(|f| {
                    let mut flags: Vec<String> = f
                        .flags
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|x| !x.eq_ignore_ascii_case("\\Recent"))
                        .collect();
                    flags.sort();
                    (
                        f.digest_sha1.unwrap().to_lowercase(),
                        flags,
                        f.internaldate.unwrap().0,
                    )
                })
                .collect()
        };
        v.sort();
        out.insert(name, v);
    }
    c.logout().unwrap();
    out
}

/// What the catalog says run `run` held (live folders, visible messages).
fn catalog_content(cat: &Catalog, run: u64) -> Content {
    run_state(cat, run)
        .into_iter()
        .filter(|(name, _)| !name.ends_with(" (deleted)"))
        .map(|(name, (_, recs))| {
            let mut v: Vec<Msg> = recs
                .into_iter()
                .filter(|r| !r.is_expunged())
                .map(|mut r| {
                    r.system_flags &= 0xFFFF;
                    let mut f = imap_flags(&r);
                    f.sort();
                    (r.guid.to_hex(), f, r.internaldate)
                })
                .collect();
            v.sort();
            (name, v)
        })
        .collect()
}

/// `cyrvault restore USER --run N --into PREFIX` over IMAP (a fresh folder tree of
/// the user), then what that tree holds.
fn restore_run(e: &Env, run: u64, prefix: &str) -> Content {
    let out = Command::new(crate::bins::cyrvault())
        .args(["restore", USER, "--run", &run.to_string(), "--into", prefix])
        .arg("--imap")
        .arg(e.sb.imap_addr.to_string())
        .arg("--password-file")
        .arg(&e.password_file)
        .arg("--vault")
        .arg(&e.vault)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "restore run {run}: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["failed"], 0, "restore run {run}: {v}");
    imap_content(&e.sb, USER, Some(&prefix.replace('/', ".")))
}

/// Message GUIDs stored in the archive, from a scan.
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

/// 2026-11-01 02:00 UTC plus `day - 1` days: the run times the policy sees.
fn day_time(day: u64) -> i64 {
    1_793_498_400 + (day as i64 - 1) * 86_400
}

#[test]
fn thirty_daily_runs_then_keep_daily_7_monthly_1() {
    let e = env("daily");
    let mut mail = MailGen::new(14).with_max_size(60_000);
    make_user(&e.sb, USER, &mut mail, 8);
    let mut runs = Vec::new();
    for day in 1..=30u64 {
        if day > 1 {
            churn(&e.sb, USER, day, &mut mail);
        }
        runs.push(e.backup(USER).run);
    }
    assert_eq!(runs, (1..=30).collect::<Vec<u64>>());
    let ua = e.archive(USER);
    let before_len = std::fs::metadata(&ua.archive).unwrap().len();
    let old = e.catalog(USER);
    let states: BTreeMap<u64, _> = runs.iter().map(|&r| (r, run_state(&old, r))).collect();
    let old_stats = old.stats().unwrap();
    drop(old);

    // The runs the policy keeps (dates faked for the policy: doc/retention.md).
    let times: BTreeMap<u64, i64> = runs.iter().map(|&r| (r, day_time(r))).collect();
    let policy = Policy {
        keep_daily: Some(Count::N(7)),
        keep_monthly: Some(Count::N(1)),
        ..Policy::default()
    };
    let kept: Vec<u64> = (24..=30).collect();
    // Before: each kept run restored over IMAP into a fresh user equals the catalog.
    let mut restored_before = BTreeMap::new();
    for &r in &kept {
        let got = restore_run(&e, r, &format!("Before/r{r}"));
        let cat = e.catalog(USER);
        assert_eq!(got, catalog_content(&cat, r), "run {r} before the prune");
        restored_before.insert(r, got);
    }

    let dry = retention::prune(
        &e.target(USER),
        &PruneOptions {
            policy: policy.clone(),
            dry_run: true,
            run_times: Some(times.clone()),
            ..PruneOptions::default()
        },
    )
    .unwrap();
    assert_eq!(dry.runs_kept, kept);
    assert_eq!(
        std::fs::metadata(&ua.archive).unwrap().len(),
        before_len,
        "dry run"
    );
    let rep = retention::prune(
        &e.target(USER),
        &PruneOptions {
            policy: policy.clone(),
            run_times: Some(times.clone()),
            ..PruneOptions::default()
        },
    )
    .unwrap();
    eprintln!(
        "prune: {} -> {} bytes; {} messages ({} bytes) freed; {:?}",
        rep.bytes_before,
        rep.bytes_after,
        rep.messages_freed,
        rep.message_bytes_freed,
        rep.compaction
    );
    assert_eq!(rep.runs_kept, kept);
    assert_eq!(rep.runs_removed, (1..=23).collect::<Vec<u64>>());
    assert_eq!(
        rep.messages_freed, dry.messages_freed,
        "the dry run said so"
    );
    let after_len = std::fs::metadata(&ua.archive).unwrap().len();
    assert_eq!(after_len, rep.bytes_after);
    assert!(after_len < before_len, "{after_len} < {before_len}");

    // Pruned runs are gone; kept runs say exactly what they said.
    let cat = e.catalog(USER);
    let now_runs: Vec<u64> = cat.runs().unwrap().iter().map(|r| r.run).collect();
    assert_eq!(now_runs, kept);
    for &r in &kept {
        assert_eq!(run_state(&cat, r), states[&r], "run {r} after the prune");
    }
    let o = e.cli(&["ls", USER, "--run", "5"]);
    assert!(!o.status.success(), "a pruned run is gone: {o:?}");
    // The archive holds exactly the messages the kept runs name.
    let needed: BTreeSet<Guid> = kept
        .iter()
        .flat_map(|&r| {
            states[&r]
                .values()
                .flat_map(|(_, v)| v.iter().map(|x| x.guid))
        })
        .collect();
    assert_eq!(stored_guids(&ua.archive), needed);
    let new_stats = cat.stats().unwrap();
    assert_eq!(
        old_stats.unique_bytes - new_stats.unique_bytes,
        rep.message_bytes_freed
    );
    eprintln!(
        "archive {before_len} -> {after_len} bytes (freed {}); unique message bytes {} -> {} \
         (expired {}); stored/unique before {:.3}, after {:.3}",
        before_len - after_len,
        old_stats.unique_bytes,
        new_stats.unique_bytes,
        rep.message_bytes_freed,
        before_len as f64 / old_stats.unique_bytes as f64,
        after_len as f64 / new_stats.unique_bytes as f64,
    );
    // Freed space is the expired bytes as stored: the stored-to-unique ratio holds.
    let ratio_before = before_len as f64 / old_stats.unique_bytes as f64;
    let ratio_after = after_len as f64 / new_stats.unique_bytes as f64;
    assert!(
        (ratio_after - ratio_before).abs() < 0.1 * ratio_before,
        "{ratio_before} vs {ratio_after}"
    );
    drop(cat);

    // Over IMAP: each kept run restored now equals what it restored before.
    for &r in &kept {
        let got = restore_run(&e, r, &format!("After/r{r}"));
        assert_eq!(got, restored_before[&r], "run {r} restored after the prune");
    }
    stock_tools_read(&ua.archive);
    verify_green(&e, USER);
    runs_read_back(&e, USER, &kept);
    let show = e.cli(&["show", USER, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v["retention"][0]["kind"], "prune", "{v}");

    // Again: nothing to do, nothing rewritten.
    let again = retention::prune(
        &e.target(USER),
        &PruneOptions {
            policy,
            run_times: Some(times),
            ..PruneOptions::default()
        },
    )
    .unwrap();
    assert!(again.nothing_to_do, "{again:?}");
    assert_eq!(std::fs::metadata(&ua.archive).unwrap().len(), after_len);

    // The next backup goes on incrementally from the pruned archive.
    churn(&e.sb, USER, 31, &mut mail);
    let next = e.backup(USER);
    assert_eq!(next.run, 31);
    let cat = e.catalog(USER);
    let live = imap_content(&e.sb, USER, None);
    assert_eq!(catalog_content(&cat, 31), live);
    drop(cat);
    verify_green(&e, USER);
    reindex_agrees(&e, USER);
}

#[test]
fn keep_deleted_takes_out_what_is_gone_too_long() {
    let e = env("deleted");
    let mut mail = MailGen::new(15).with_max_size(20_000);
    make_user(&e.sb, USER, &mut mail, 4);
    e.backup(USER);
    // Run 2: a folder deleted; run 3: a message expunged from INBOX.
    let mut c = e.sb.login(USER).unwrap();
    let gone_folder = e
        .catalog(USER)
        .folder_by_name_at("INBOX.Lists", 1)
        .unwrap()
        .unwrap();
    c.delete("INBOX.Lists").unwrap();
    c.logout().unwrap();
    // Cyrus keeps it in its delayed-delete area until cyr_expire removes it; while it
    // is there it is backed up as a deleted folder and not expired (the next backup
    // would capture it again). Removed now: run 2 finds it gone.
    e.sb.tool_ok("cyr_expire", &["-D", "0"]).unwrap();
    e.backup(USER);
    let mut c = e.sb.login(USER).unwrap();
    c.select("INBOX").unwrap();
    let first = c.uid_fetch("1", "(UID DIGEST.SHA1)").unwrap();
    let expunged = Guid::from_hex(first[0].digest_sha1.as_deref().unwrap()).unwrap();
    c.uid_store(&first[0].uid.unwrap().to_string(), "+FLAGS", &["\\Deleted"])
        .unwrap();
    c.expunge().unwrap();
    c.logout().unwrap();
    e.backup(USER);
    e.backup(USER);
    let cat = e.catalog(USER);
    let lists_guids: HashSet<Guid> = cat
        .records_at(&gone_folder.uniqueid, 1)
        .unwrap()
        .into_iter()
        .map(|r| r.guid)
        .collect();
    let before: BTreeMap<u64, _> = (1..=4).map(|r| (r, run_state(&cat, r))).collect();
    drop(cat);
    // Not yet: deleted a moment ago.
    let p = |now| PruneOptions {
        policy: Policy {
            keep_deleted: Some(86_400),
            ..Policy::default()
        },
        now,
        ..PruneOptions::default()
    };
    let r = retention::prune(&e.target(USER), &p(None)).unwrap();
    assert!(r.nothing_to_do, "{r:?}");
    // Two days later: the deleted folder leaves every run, the expunged message
    // leaves the runs that still showed it.
    assert!(
        cyrvault_host::retention::pair::archive_generation(&e.archive(USER).archive)
            .unwrap()
            .is_none(),
        "nothing was rewritten"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 2 * 86_400;
    eprintln!("expunged {expunged}");
    let r = retention::prune(&e.target(USER), &p(Some(now))).unwrap();
    assert!(r.runs_removed.is_empty());
    assert_eq!(r.folders_removed.len(), 1, "{r:?}");
    assert_eq!(r.folders_removed[0].uniqueid, gone_folder.uniqueid);
    assert_eq!(r.messages_erased, 1 + lists_guids.len() as u64, "{r:?}");
    let cat = e.catalog(USER);
    for run in 1..=4 {
        let mut want = before[&run].clone();
        want.remove("INBOX.Lists");
        if let Some((_, recs)) = want.get_mut("INBOX") {
            recs.retain(|x| x.guid != expunged);
        }
        assert_eq!(run_state(&cat, run), want, "run {run}");
    }
    let ev = cat.retention_events().unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, "prune");
    assert!(cat.erased().unwrap().contains_key(&expunged));
    drop(cat);
    let stored = stored_guids(&e.archive(USER).archive);
    assert!(!stored.contains(&expunged));
    for g in &lists_guids {
        assert!(!stored.contains(g), "a message of the deleted folder");
    }
    verify_green(&e, USER);
    reindex_agrees(&e, USER);
    stock_tools_read(&e.archive(USER).archive);

    // Cyrus still holds the expunged copy: the next run of a changed INBOX leaves it
    // out, it is not fetched again.
    let mut c = e.sb.login(USER).unwrap();
    c.select("INBOX").unwrap();
    c.uid_store("1:*", "+FLAGS", &["$Seen2"]).unwrap();
    c.logout().unwrap();
    let rep = e.backup(USER);
    assert_eq!(rep.messages_fetched, 0, "{rep:#?}");
    assert_eq!(rep.messages_erased_skipped, 1, "{rep:#?}");
    // Brought back with Cyrus's `unexpunge`, it is visible again: backed up again.
    let inbox = e.sb.mailbox_name(USER, None);
    e.sb.tool_ok("unexpunge", &["-a", &inbox]).unwrap();
    let rep = e.backup(USER);
    assert_eq!(rep.messages_fetched, 1, "{rep:#?}");
    let cat = e.catalog(USER);
    let back = run_state(&cat, rep.run);
    assert!(
        back["INBOX"]
            .1
            .iter()
            .any(|r| r.guid == expunged && !r.is_expunged())
    );
    drop(cat);
    verify_green(&e, USER);
    reindex_agrees(&e, USER);
}
