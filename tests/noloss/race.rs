//! The rename race, forced deterministically: a `Progress::folder_read` hook (called by
//! the run after a folder's `FMETA`, before its `FDATA`) renames the folder over IMAP at
//! exactly that point. Real Cyrus, real cyrvaultd; nothing is mocked. The folder must be
//! reported FAILED (temporary, exit 75), its previous state carried forward, nothing
//! recorded that the archive does not hold, and the next run must back it up whole.
//! The same for `FMETA` answering `NO` (renamed between listing and reading), for a
//! message file gone from the spool (the command's exit status and `--json`), with
//! cyrvaultd's extensions and with the base protocol a stock `backupcyrusd` speaks;
//! and for the connection dropped at that point (the whole run fails, nothing commits).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cyrvault_host::backup::{FailureClass, Progress};
use cyrvault_host::imap::Client;
use cyrvault_testkit::sandbox::MailGen;

use super::{Env, env, guid_set, nothing_lost};

/// Renames `from` to `to` over IMAP (as `user`) when the run has read `at`'s metadata.
struct RenameWhenRead {
    imap: SocketAddr,
    user: String,
    at: String,
    from: String,
    to: String,
    fired: AtomicBool,
}

impl RenameWhenRead {
    fn new(e: &Env, user: &str, at: &str, from: &str, to: &str) -> Arc<RenameWhenRead> {
        Arc::new(RenameWhenRead {
            imap: e.sb.imap_addr,
            user: user.into(),
            at: at.into(),
            from: from.into(),
            to: to.into(),
            fired: AtomicBool::new(false),
        })
    }
}

impl Progress for RenameWhenRead {
    fn user_started(&self, _user: &str, _folders: usize) {}
    fn folder(&self, _user: &str, _name: &str) {}
    fn bytes(&self, _n: u64) {}
    fn folder_read(&self, _user: &str, name: &str) {
        if name != self.at || self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut c = Client::connect(self.imap).unwrap();
        c.login(&self.user, "pw").unwrap();
        c.rename(&self.from, &self.to).unwrap();
        c.logout().unwrap();
    }
}

fn append(e: &Env, user: &str, folder: Option<&str>, mail: &mut MailGen, n: usize) {
    for _ in 0..n {
        let m = mail.message_of_size(3000);
        e.sb.append(user, folder, &[], Some(m.date), &m.bytes)
            .unwrap();
    }
}

fn rename_race(base: bool) {
    let e = env(if base { "racebase" } else { "race" }, base);
    let user = "rita";
    e.sb.create_user(user, None).unwrap();
    for f in ["Calm", "Race"] {
        e.sb.create_folder(user, f, None).unwrap();
    }
    let mut mail = MailGen::new(9);
    append(&e, user, None, &mut mail, 2);
    append(&e, user, Some("Calm"), &mut mail, 2);
    append(&e, user, Some("Race"), &mut mail, 5);
    let r1 = e.backup(user);
    assert!(!r1.has_problems(), "{r1:?}");
    let cat = e.catalog(user);
    let race = cat.folder_by_name_at("INBOX.Race", 1).unwrap().unwrap();
    let race_at_1 = guid_set(&cat, &race.uniqueid, 1);
    assert_eq!(race_at_1.len(), 5);
    drop(cat);

    // New mail in Race, then the rename lands between its FMETA and its FDATA.
    append(&e, user, Some("Race"), &mut mail, 3);
    let hook = RenameWhenRead::new(&e, user, "INBOX.Race", "INBOX.Race", "INBOX.Race-r");
    let r2 = e.backup_with(user, Some(hook.clone()));
    assert!(hook.fired.load(Ordering::SeqCst));
    assert_eq!(r2.folders_failed.len(), 1, "{r2:#?}");
    let f = &r2.folders_failed[0];
    assert_eq!(
        (f.user.as_str(), f.folder.as_str(), f.class),
        (user, "INBOX.Race", FailureClass::Temporary),
        "{f}"
    );
    assert_eq!(f.uniqueid.as_deref(), Some(race.uniqueid.as_str()));
    assert!(f.reason.contains("FDATA answered NO"), "{f}");
    assert!(f.carried_forward, "{f}");
    assert_eq!(r2.problem_exit_code(), Some(75));
    assert_eq!(r2.messages_fetched, 0, "{r2:?}");
    // The run committed, with Race's previous state carried forward: same name, the
    // same five messages, nothing the archive does not hold.
    let cat = e.catalog(user);
    let at2 = cat.folder_by_name_at("INBOX.Race", 2).unwrap().unwrap();
    assert_eq!(at2.uniqueid, race.uniqueid);
    assert_eq!(guid_set(&cat, &race.uniqueid, 2), race_at_1);
    drop(cat);
    nothing_lost(&e, user, 5);

    // The next run (after the rename) backs it up completely under its new name.
    let r3 = e.backup(user);
    assert!(!r3.has_problems(), "{r3:#?}");
    assert_eq!(r3.messages_fetched, 3);
    let cat = e.catalog(user);
    let at3 = cat.folder_by_name_at("INBOX.Race-r", 3).unwrap().unwrap();
    assert_eq!(at3.uniqueid, race.uniqueid);
    let theirs = crate::mbexamine::record_states(&e.sb.mbexamine("user.rita.Race-r").unwrap()).1;
    let theirs: std::collections::HashSet<_> = theirs.iter().map(|r| r.guid).collect();
    assert_eq!(guid_set(&cat, &race.uniqueid, 3), theirs);
    assert_eq!(theirs.len(), 8);
    drop(cat);

    // FMETA's turn: Calm is renamed after the listing, while INBOX is being read.
    append(&e, user, None, &mut mail, 1);
    append(&e, user, Some("Calm"), &mut mail, 1);
    let hook = RenameWhenRead::new(&e, user, "INBOX", "INBOX.Calm", "INBOX.Calm2");
    let r4 = e.backup_with(user, Some(hook.clone()));
    assert!(hook.fired.load(Ordering::SeqCst));
    assert_eq!(r4.folders_failed.len(), 1, "{r4:#?}");
    let f = &r4.folders_failed[0];
    assert_eq!(
        (f.folder.as_str(), f.class),
        ("INBOX.Calm", FailureClass::Temporary)
    );
    assert!(f.reason.contains("FMETA answered NO"), "{f}");
    assert!(f.carried_forward);
    let r5 = e.backup(user);
    assert!(!r5.has_problems(), "{r5:#?}");
    let cat = e.catalog(user);
    let calm = cat.folder_by_name_at("INBOX.Calm2", 5).unwrap().unwrap();
    assert_eq!(guid_set(&cat, &calm.uniqueid, 5).len(), 3);
    drop(cat);

    // A message file gone from the spool: the command names the folder and the
    // reason, in the table's stead in --json, and exits 75; the file back, all is well.
    append(&e, user, Some("Race-r"), &mut mail, 1);
    let file = e.sb.mbpath("user.rita.Race-r").unwrap().join("9.");
    let kept = e.dir.join("9.kept");
    std::fs::rename(&file, &kept).unwrap();
    let o = e.cli_backup(user);
    assert_eq!(o.status.code(), Some(75), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("user rita folder INBOX.Race-r: FAILED (temporary)")
            && err.contains("no message file for uid(s) 9"),
        "{err}"
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j[0]["ok"], false, "{j}");
    let failed = &j[0]["report"]["folders_failed"];
    assert_eq!(failed[0]["folder"], "INBOX.Race-r", "{j}");
    assert_eq!(failed[0]["class"], "temporary", "{j}");
    assert_eq!(failed[0]["carried_forward"], true, "{j}");
    nothing_lost(&e, user, 3);
    std::fs::rename(&kept, &file).unwrap();
    let o = e.cli_backup(user);
    assert!(o.status.success(), "{o:?}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j[0]["ok"], true, "{j}");
    assert_eq!(j[0]["report"]["messages_fetched"], 1, "{j}");
    nothing_lost(&e, user, 3);
}

#[test]
fn rename_between_fmeta_and_fdata_fails_the_folder_and_loses_nothing() {
    rename_race(false);
}

#[test]
fn rename_race_with_the_base_protocol() {
    rename_race(true);
}

/// Kills the cyrvaultd process serving the run's connection (the one established
/// connection to the service's port, found through /proc) when `at` has been read.
struct KillServerWhenRead {
    port: u16,
    at: String,
    fired: AtomicBool,
}

/// The pid owning the server end of the established TCP connection on local `port`.
fn server_pid(port: u16) -> Option<i32> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = tcp.lines().skip(1).find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        let local = u16::from_str_radix(w.get(1)?.rsplit(':').next()?, 16).ok()?;
        (local == port && *w.get(3)? == "01").then(|| w.get(9).map(|s| s.to_string()))?
    })?;
    let want = format!("socket:[{inode}]");
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == want) {
                return Some(pid);
            }
        }
    }
    None
}

impl Progress for KillServerWhenRead {
    fn user_started(&self, _user: &str, _folders: usize) {}
    fn folder(&self, _user: &str, _name: &str) {}
    fn bytes(&self, _n: u64) {}
    fn folder_read(&self, _user: &str, name: &str) {
        if name != self.at || self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        let pid = server_pid(self.port).expect("the cyrvaultd serving this run");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
}

/// The connection dies between a folder's FMETA and FDATA: the run fails as a whole
/// (temporary), commits nothing, and the next run completes; nothing is lost.
#[test]
fn a_connection_dropped_mid_folder_commits_nothing() {
    let e = env("drop", false);
    let user = "dora";
    e.sb.create_user(user, None).unwrap();
    e.sb.create_folder(user, "Race", None).unwrap();
    let mut mail = MailGen::new(11);
    append(&e, user, None, &mut mail, 2);
    append(&e, user, Some("Race"), &mut mail, 4);
    assert!(!e.backup(user).has_problems());
    append(&e, user, None, &mut mail, 2);
    append(&e, user, Some("Race"), &mut mail, 3);
    let port: u16 = e.addr.rsplit(':').next().unwrap().parse().unwrap();
    let hook = Arc::new(KillServerWhenRead {
        port,
        at: "INBOX.Race".into(),
        fired: AtomicBool::new(false),
    });
    let v = cyrvault_host::vault::Vault::open(&e.vault).unwrap();
    let mut s = e.server();
    let opts = cyrvault_host::backup::BackupOptions {
        progress: Some(hook.clone()),
        ..Default::default()
    };
    let err = cyrvault_host::backup::backup_user(&mut s, &v, user, &opts).unwrap_err();
    assert!(hook.fired.load(Ordering::SeqCst));
    assert!(err.is_temporary(), "{err}");
    assert_eq!(err.exit_code(), 75);
    let cat = e.catalog(user);
    assert_eq!(cat.last_run().unwrap().unwrap().run, 1, "nothing committed");
    drop(cat);
    nothing_lost(&e, user, 2);
    let r = e.backup(user);
    assert!(!r.has_problems(), "{r:#?}");
    let cat = e.catalog(user);
    let race = cat.folder_by_name_at("INBOX.Race", r.run).unwrap().unwrap();
    assert_eq!(guid_set(&cat, &race.uniqueid, r.run).len(), 7);
    drop(cat);
    nothing_lost(&e, user, 2);
}
