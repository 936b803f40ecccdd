//! Crash safety and concurrency of a compaction: `cyrvault prune` killed -9 at random
//! instants, the swap's one window between its two renames, and a backup of the same
//! user running at the same time.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cyrvault_host::admin;
use cyrvault_host::backup::{self, BackupOptions, Progress};
use cyrvault_host::catalog::Catalog;
use cyrvault_host::retention::{self, Count, Policy, PruneOptions};
use cyrvault_host::vault::Vault;
use cyrvault_testkit::sandbox::MailGen;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{
    Env, RunState, churn, env, make_user, reindex_agrees, run_state, runs_read_back,
    stock_tools_read, verify_green,
};

const USER: &str = "kim";

fn leftovers(e: &Env) -> (bool, bool) {
    let ua = e.archive(USER);
    (
        retention::pair::new_archive_path(&ua.archive).exists(),
        Catalog::pending_path(&ua.catalog).exists(),
    )
}

/// After whatever a kill left: `verify` is green, the runs are the old set or the new
/// one, every run listed says exactly what it said before, and its messages read back.
fn check_after_kill(e: &Env, states: &BTreeMap<u64, RunState>, old: &[u64], new: &[u64]) {
    verify_green(e, USER);
    let cat = e.catalog(USER);
    let runs: Vec<u64> = cat.runs().unwrap().iter().map(|r| r.run).collect();
    assert!(
        runs == old || runs == new,
        "runs {runs:?}: neither {old:?} nor {new:?}"
    );
    for &r in &runs {
        assert_eq!(run_state(&cat, r), states[&r], "run {r} after a kill");
    }
    drop(cat);
    runs_read_back(e, USER, &runs);
    let g = Command::new("gzip")
        .arg("-t")
        .arg(e.archive(USER).archive)
        .output()
        .unwrap();
    assert!(g.status.success(), "gzip -t after a kill: {g:?}");
}

#[test]
fn prune_killed_at_random_instants_leaves_a_verifiable_pair() {
    let e = env("kill");
    let mut mail = MailGen::new(9).with_max_size(400_000);
    make_user(&e.sb, USER, &mut mail, 10);
    for day in 1..=12u64 {
        if day > 1 {
            churn(&e.sb, USER, day, &mut mail);
        }
        e.backup(USER);
    }
    let cat = e.catalog(USER);
    let states: BTreeMap<u64, RunState> = (1..=12).map(|r| (r, run_state(&cat, r))).collect();
    drop(cat);
    let prune_cmd = |keep: usize| {
        let mut c = Command::new(crate::bins::cyrvault());
        c.args(["prune", USER, "--keep-last", &keep.to_string(), "--json"])
            .arg("--vault")
            .arg(&e.vault)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    // How long one prune takes here: on a copy of the vault.
    let copy = e.dir.join("copy");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&e.vault)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let t0 = Instant::now();
    let st = Command::new(crate::bins::cyrvault())
        .args(["prune", USER, "--keep-last", "11", "--vault"])
        .arg(&copy)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let full = t0.elapsed();
    eprintln!("one prune of {} bytes takes {full:?}", {
        std::fs::metadata(e.archive(USER).archive).unwrap().len()
    });
    let mut rng = SmallRng::seed_from_u64(14);
    let (mut killed, mut completed, mut pending_seen) = (0, 0, 0);
    for i in 0..10 {
        let cat = e.catalog(USER);
        let old: Vec<u64> = cat.runs().unwrap().iter().map(|r| r.run).collect();
        drop(cat);
        if old.len() <= 2 {
            break;
        }
        let keep = old.len() - 1;
        let new: Vec<u64> = old[1..].to_vec();
        let at = full.mul_f64(rng.gen_range(0.0..2.0));
        let mut child = prune_cmd(keep).spawn().unwrap();
        std::thread::sleep(at);
        let done = child.try_wait().unwrap();
        if done.is_none() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            killed += 1;
        } else {
            completed += 1;
        }
        let status = child.wait().unwrap();
        let (stale_archive, pending) = leftovers(&e);
        if pending
            && retention::pair::pair_state(&e.archive(USER).archive, &e.archive(USER).catalog)
                .unwrap()
                == retention::pair::PairState::PendingInstall
        {
            pending_seen += 1;
        }
        eprintln!(
            "attempt {i}: kill after {at:?}: {status:?}; leftovers: new archive {stale_archive}, \
             new catalog {pending}"
        );
        check_after_kill(&e, &states, &old, &new);
    }
    eprintln!("{killed} killed, {completed} completed, {pending_seen} left a pending catalog");
    assert!(killed >= 3, "most attempts are killed mid-way");
    // A writer settles whatever is left; the last prune completes.
    let cat = e.catalog(USER);
    let runs: Vec<u64> = cat.runs().unwrap().iter().map(|r| r.run).collect();
    drop(cat);
    let st = prune_cmd(runs.len() - 1).status().unwrap();
    assert!(st.success());
    assert_eq!(leftovers(&e), (false, false), "no leftovers after a prune");
    let cat = e.catalog(USER);
    let runs: Vec<u64> = cat.runs().unwrap().iter().map(|r| r.run).collect();
    for &r in &runs {
        assert_eq!(run_state(&cat, r), states[&r]);
    }
    drop(cat);
    verify_green(&e, USER);
    reindex_agrees(&e, USER);
    stock_tools_read(&e.archive(USER).archive);
}

/// The one window a random kill rarely hits: the new archive renamed into place, the
/// new catalog not yet. Made by hand from a finished prune (old catalog back in place,
/// the new one as `<catalog>.new`): readers read the new one, `verify` is green, the
/// next backup installs it and goes on.
#[test]
fn interrupted_swap_is_finished_by_the_next_writer() {
    let e = env("swap");
    let mut mail = MailGen::new(10).with_max_size(30_000);
    make_user(&e.sb, USER, &mut mail, 5);
    for day in 1..=4 {
        if day > 1 {
            churn(&e.sb, USER, day, &mut mail);
        }
        e.backup(USER);
    }
    let ua = e.archive(USER);
    let states: BTreeMap<u64, RunState> = {
        let cat = e.catalog(USER);
        (1..=4).map(|r| (r, run_state(&cat, r))).collect()
    };
    let saved = e.dir.join("old-catalog");
    // The backup does not checkpoint its commits (doc/catalog.md: a catalog is its
    // file and its -wal): fold the WAL in first so that the one file is the catalog.
    rusqlite::Connection::open(&ua.catalog)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    std::fs::copy(&ua.catalog, &saved).unwrap();
    let _ = std::fs::remove_file(format!("{}-wal", ua.catalog.display()));
    let r = retention::prune(
        &e.target(USER),
        &PruneOptions {
            policy: Policy {
                keep_last: Some(Count::N(2)),
                ..Policy::default()
            },
            ..PruneOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.runs_removed, [1, 2]);
    // Put the pair back as a crash between the two renames leaves it.
    std::fs::rename(&ua.catalog, Catalog::pending_path(&ua.catalog)).unwrap();
    std::fs::copy(&saved, &ua.catalog).unwrap();
    assert_eq!(
        retention::pair::pair_state(&ua.archive, &ua.catalog).unwrap(),
        retention::pair::PairState::PendingInstall
    );
    // Readers read the new catalog.
    verify_green(&e, USER);
    let o = e.cli(&["ls", USER, "--json"]);
    assert!(o.status.success(), "{o:?}");
    let runs: Vec<u64> = e
        .catalog(USER)
        .runs()
        .unwrap()
        .iter()
        .map(|r| r.run)
        .collect();
    assert_eq!(runs, [3, 4]);
    // The next backup settles the pair and goes on from it.
    churn(&e.sb, USER, 5, &mut mail);
    let rep = e.backup(USER);
    assert_eq!(rep.run, 5);
    assert!(!Catalog::pending_path(&ua.catalog).exists());
    let cat = Catalog::open_read_only(&ua.catalog).unwrap();
    for r in [3, 4] {
        assert_eq!(run_state(&cat, r), states[&r]);
    }
    drop(cat);
    verify_green(&e, USER);
    reindex_agrees(&e, USER);
    // A catalog of another generation with nothing pending is refused, not used.
    std::fs::copy(&saved, &ua.catalog).unwrap();
    let _ = std::fs::remove_file(format!("{}-wal", ua.catalog.display()));
    let v = Vault::open(&e.vault).unwrap();
    let Err(err) = backup::backup_user(&mut e.server(), &v, USER, &BackupOptions::default()) else {
        panic!("a stale catalog is refused");
    };
    assert!(!err.is_temporary(), "{err}");
    assert!(err.to_string().contains("reindex"), "{err}");
    let o = e.cli(&["reindex", USER]);
    assert!(o.status.success(), "{o:?}");
    verify_green(&e, USER);
}

/// Holds a backup inside its run (the archive locked) until released.
struct Pause {
    paused: AtomicBool,
    gate: Mutex<bool>,
    cv: Condvar,
}

impl Progress for Pause {
    fn user_started(&self, _user: &str, _folders: usize) {}
    fn folder(&self, _user: &str, _name: &str) {}
    fn bytes(&self, _n: u64) {}
    fn folder_read(&self, _user: &str, _name: &str) {
        if self.paused.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut open = self.gate.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
}

#[test]
fn prune_beside_a_backup_of_the_same_user_waits_or_fails_cleanly() {
    let e = env("beside");
    let mut mail = MailGen::new(11).with_max_size(30_000);
    make_user(&e.sb, USER, &mut mail, 5);
    for day in 1..=3 {
        if day > 1 {
            churn(&e.sb, USER, day, &mut mail);
        }
        e.backup(USER);
    }
    churn(&e.sb, USER, 4, &mut mail);
    let ua = e.archive(USER);
    let pause = Arc::new(Pause {
        paused: AtomicBool::new(false),
        gate: Mutex::new(false),
        cv: Condvar::new(),
    });
    let len_before = std::fs::metadata(&ua.archive).unwrap().len();
    std::thread::scope(|s| {
        let p = pause.clone();
        let e2 = &e;
        let backup = s.spawn(move || {
            let v = Vault::open(&e2.vault).unwrap();
            let opts = BackupOptions {
                progress: Some(p),
                ..Default::default()
            };
            backup::backup_user(&mut e2.server(), &v, USER, &opts).unwrap()
        });
        while !pause.paused.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The backup holds the archive: prune fails at once, cleanly.
        let o = e.cli(&["prune", USER, "--keep-last", "1", "--json"]);
        assert_eq!(o.status.code(), Some(75), "{o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("locked"),
            "{o:?}"
        );
        assert_eq!(std::fs::metadata(&ua.archive).unwrap().len(), len_before);
        // With --wait it waits for the backup, then prunes.
        let waiting = Command::new(crate::bins::cyrvault())
            .args(["prune", USER, "--keep-last", "1", "--wait", "2m", "--json"])
            .arg("--vault")
            .arg(&e.vault)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let mut waiting = waiting;
        assert!(waiting.try_wait().unwrap().is_none(), "prune --wait waits");
        *pause.gate.lock().unwrap() = true;
        pause.cv.notify_all();
        let rep = backup.join().unwrap();
        assert_eq!(rep.run, 4);
        let out = waiting.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["users"][0]["runs_kept"], serde_json::json!([4]), "{v}");
    });
    // The backup's run survived the prune that waited for it.
    let cat = e.catalog(USER);
    let runs: Vec<u64> = cat.runs().unwrap().iter().map(|r| r.run).collect();
    assert_eq!(runs, [4]);
    drop(cat);
    verify_green(&e, USER);
    reindex_agrees(&e, USER);
    // And the other way round: while a prune holds the archive, a backup fails at
    // once, cleanly (exit 75), and leaves the archive as it was.
    let lock = cyrvault_host::archive::lock_archive(&ua.archive, None).unwrap();
    let o = Command::new(crate::bins::cyrvault())
        .args(["backup", USER, "--server", &e.addr, "--json"])
        .arg("--secret-file")
        .arg(&e.secret)
        .arg("--vault")
        .arg(&e.vault)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(75), "{o:?}");
    drop(lock);
    let ok = admin::verify(&e.archive(USER)).unwrap();
    assert!(ok.ok, "{ok:#?}");
}
