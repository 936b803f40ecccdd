//! Issue 14, retention, against a real Cyrus 3.6 with the real `cyrvaultd` under
//! Cyrus's real master and real archives:
//!
//! * `daily.rs` — 30 daily runs with churn, then `prune --keep-daily 7 --keep-monthly
//!   1`: kept runs restore over IMAP exactly as before, pruned runs are gone, the
//!   archive is smaller by what expired, stock `gzip`/`tar` read it, `verify` is green,
//!   `reindex` rebuilds exactly the installed catalog; `--keep-deleted` erases deleted
//!   content from kept runs. (Run times are faked for the policy only, through the
//!   documented test-only `PruneOptions::run_times`: 30 real runs take minutes, not
//!   30 days.)
//! * `deleted.rs` — a folder in Cyrus's delayed-delete area is kept by
//!   `--keep-deleted` while Cyrus holds it, then expires counted from its deletion.
//! * `crash.rs` — `cyrvault prune` killed -9 at random instants: every kill leaves the
//!   old or the new pair, `verify` green, nothing kept lost; prune against a running
//!   backup of the same user fails at once (75) or waits (`--wait`).
//! * `forget.rs` — `forget --message` leaves no byte of the message anywhere in the
//!   archive (raw and inflated), `--folder`, `--before`, `--all`; legal holds block
//!   prune and forget and survive `reindex`.

mod crash;
mod daily;
mod deleted;
mod forget;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use cyrvault::cyrus::Guid;
use cyrvault_host::admin::{self, ReindexOptions, UserArchive};
use cyrvault_host::backup::{self, BackupOptions, ConnectOptions, Server, UserReport};
use cyrvault_host::catalog::Catalog;
use cyrvault_host::model::RecordState;
use cyrvault_host::retention::Target;
use cyrvault_host::vault::Vault;
use cyrvault_testkit::sandbox::{MailGen, Sandbox, SandboxOptions, ServiceLine};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

static N: AtomicU32 = AtomicU32::new(0);

const SECRET: &[u8] = b"retention-test-secret-0123456789";

/// A sandbox with cyrvaultd (no secret, base-protocol-free client) and a vault.
pub struct Env {
    pub sb: Sandbox,
    pub addr: String,
    pub secret: PathBuf,
    pub dir: PathBuf,
    pub vault: PathBuf,
    pub password_file: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn env(name: &str) -> Env {
    let dir = std::env::temp_dir().join(format!(
        "cyrvault-rt-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, [SECRET, b"\n"].concat()).unwrap();
    let cyrus = nix::unistd::User::from_name("cyrus").unwrap().unwrap();
    nix::unistd::chown(&secret, Some(cyrus.uid), Some(cyrus.gid)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sb = Sandbox::start(SandboxOptions {
        name_hint: name.into(),
        extra_services: vec![ServiceLine::tcp(
            "cyrvaultd",
            env!("CARGO_BIN_EXE_cyrvaultd"),
        )],
        extra_imapd_conf: vec![(
            "cyrvaultd_secret_file".to_string(),
            secret.display().to_string(),
        )],
        ..Default::default()
    })
    .unwrap();
    let addr = sb.service_addrs["cyrvaultd"].to_string();
    let password_file = dir.join("imap-password");
    std::fs::write(&password_file, "secret\n").unwrap();
    let vault = dir.join("vault");
    Env {
        sb,
        addr,
        secret,
        dir,
        vault,
        password_file,
    }
}

impl Env {
    pub fn server(&self) -> Server {
        Server::connect(
            &self.addr,
            &ConnectOptions {
                secret: Some(cyrvault::secret::Secret::from_bytes(SECRET).unwrap()),
                ..Default::default()
            },
        )
        .unwrap()
    }

    pub fn backup(&self, user: &str) -> UserReport {
        let v = Vault::open(&self.vault).unwrap();
        let mut s = self.server();
        let rep = backup::backup_user(&mut s, &v, user, &BackupOptions::default())
            .unwrap_or_else(|e| panic!("backing up {user}: {e}"));
        assert!(!rep.has_problems(), "{rep:#?}");
        rep
    }

    /// `cyrvault ARGS... --vault V` (the binary).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(crate::bins::cyrvault())
            .args(args)
            .arg("--vault")
            .arg(&self.vault)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn archive(&self, user: &str) -> UserArchive {
        admin::find_user(&self.vault, user).unwrap()
    }

    pub fn target(&self, user: &str) -> Target {
        let ua = self.archive(user);
        Target {
            user: ua.user,
            archive: ua.archive,
            catalog: ua.catalog,
        }
    }

    pub fn catalog(&self, user: &str) -> Catalog {
        self.archive(user).open_catalog().unwrap()
    }
}

/// One day of mail life for `user`: new mail in random folders, flags changed, some
/// messages expunged, and now and then a folder renamed, created or deleted.
pub fn churn(sb: &Sandbox, user: &str, day: u64, mail: &mut MailGen) {
    let mut rng = SmallRng::seed_from_u64(day * 7919 + 1);
    let mut c = sb.login(user).unwrap();
    let folders: Vec<String> = c
        .list("", "INBOX*")
        .unwrap()
        .into_iter()
        .filter(|l| !l.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Noselect")))
        .map(|l| l.name)
        .collect();
    for _ in 0..rng.gen_range(3..7) {
        let f = &folders[rng.gen_range(0..folders.len())];
        let m = mail.message();
        c.append(f, &[], Some(m.date), &m.bytes).unwrap();
    }
    for f in &folders {
        let info = c.select(f).unwrap();
        if info.exists > 0 {
            let uids: Vec<u32> = c
                .uid_fetch("1:*", "(UID)")
                .unwrap()
                .into_iter()
                .filter_map(|x| x.uid)
                .collect();
            let pick = uids[rng.gen_range(0..uids.len())].to_string();
            let flag = ["\\Flagged", "\\Seen", "$Work"][rng.gen_range(0..3)];
            c.uid_store(&pick, "+FLAGS", &[flag]).unwrap();
            if rng.gen_bool(0.5) && uids.len() > 2 {
                let gone = uids[rng.gen_range(0..uids.len())].to_string();
                c.uid_store(&gone, "+FLAGS", &["\\Deleted"]).unwrap();
                c.expunge().unwrap();
            }
        }
        c.close().unwrap();
    }
    match day % 9 {
        3 => {
            let name = format!("INBOX.Day{day}");
            c.create(&name).unwrap();
            let m = mail.message();
            c.append(&name, &["\\Seen"], Some(m.date), &m.bytes)
                .unwrap();
        }
        6 => {
            if let Some(f) = folders.iter().find(|f| f.starts_with("INBOX.Day")) {
                c.delete(f).unwrap();
            }
        }
        8 => {
            if let Some(f) = folders.iter().find(|f| f.as_str() == "INBOX.Work") {
                c.rename(f, "INBOX.Job").unwrap();
            } else if let Some(f) = folders.iter().find(|f| f.as_str() == "INBOX.Job") {
                c.rename(f, "INBOX.Work").unwrap();
            }
        }
        _ => {}
    }
    c.logout().unwrap();
}

/// A user with a few folders and some mail.
pub fn make_user(sb: &Sandbox, user: &str, mail: &mut MailGen, per_folder: usize) {
    sb.create_user(user, None).unwrap();
    for f in ["Work", "Lists", "Archive"] {
        sb.create_folder(user, f, None).unwrap();
    }
    for f in [None, Some("Work"), Some("Lists"), Some("Archive")] {
        for _ in 0..per_folder {
            let m = mail.message();
            sb.append(user, f, &[], Some(m.date), &m.bytes).unwrap();
        }
    }
}

/// What a run shows: the name of every folder the server held at it → (UniqueID,
/// records). A folder in Cyrus's delayed-delete area is named `NAME (deleted)`.
pub type RunState = BTreeMap<String, (String, Vec<RecordState>)>;

pub fn run_state(cat: &Catalog, run: u64) -> RunState {
    cat.folders_at(run)
        .unwrap()
        .into_iter()
        .filter(|f| f.present(run))
        .map(|f| {
            let recs = cat.records_at(&f.uniqueid, run).unwrap();
            let name = match f.deleted_at {
                Some(_) => format!("{} (deleted)", f.name),
                None => f.name,
            };
            (name, (f.uniqueid, recs))
        })
        .collect()
}

/// The catalog's dump, then `reindex` from the archive alone, then its dump: equal.
pub fn reindex_agrees(e: &Env, user: &str) {
    let ua = e.archive(user);
    let before = Catalog::open_read_only(&ua.catalog)
        .unwrap()
        .dump_canonical()
        .unwrap();
    let r = admin::reindex(&ua, &ReindexOptions::default()).unwrap();
    assert!(!r.failed(), "reindex: {r:#?}");
    let after = Catalog::open_read_only(&ua.catalog)
        .unwrap()
        .dump_canonical()
        .unwrap();
    if before != after {
        let b: Vec<&str> = before.lines().collect();
        let a: Vec<&str> = after.lines().collect();
        let diff: Vec<String> = b
            .iter()
            .filter(|l| !a.contains(l))
            .map(|l| format!("- {l}"))
            .chain(
                a.iter()
                    .filter(|l| !b.contains(l))
                    .map(|l| format!("+ {l}")),
            )
            .take(40)
            .collect();
        panic!("reindex differs from the catalog:\n{}", diff.join("\n"));
    }
}

/// `verify` (library and binary) is green.
pub fn verify_green(e: &Env, user: &str) {
    let v = admin::verify(&e.archive(user)).unwrap();
    assert!(v.ok, "verify: {v:#?}");
    let o = e.cli(&["verify", user, "--json"]);
    assert!(o.status.success(), "{o:?}");
}

/// Stock tools: `gzip -t`, and `tar -tzf` listing exactly the archive's entries.
pub fn stock_tools_read(path: &std::path::Path) -> usize {
    let g = Command::new("gzip").arg("-t").arg(path).output().unwrap();
    assert!(g.status.success(), "gzip -t: {g:?}");
    let t = Command::new("tar").arg("-tzf").arg(path).output().unwrap();
    assert!(t.status.success() && t.stderr.is_empty(), "tar -tzf: {t:?}");
    let listed = String::from_utf8_lossy(&t.stdout).lines().count();
    let scan = cyrvault_host::archive::scan(path).unwrap();
    assert!(scan.damage.is_empty() && scan.truncated_tail.is_none());
    let entries: usize = scan.members.iter().map(|m| m.entries.len()).sum();
    assert_eq!(listed, entries, "tar lists every entry");
    listed
}

/// Every GUID the records of `runs` name reads back and hashes to itself (each once,
/// through `restore`'s batch reader: one inflate per member).
pub fn runs_read_back(e: &Env, user: &str, runs: &[u64]) -> usize {
    let ua = e.archive(user);
    let cat = ua.open_catalog().unwrap();
    let mut all = std::collections::BTreeSet::new();
    for &r in runs {
        for (_, (_, recs)) in run_state(&cat, r) {
            all.extend(recs.into_iter().map(|x| x.guid));
        }
    }
    drop(cat);
    for g in &all {
        let got = admin::cat_guid(&ua, g).unwrap();
        assert_eq!(Guid::of(&got.bytes), *g);
    }
    all.len()
}
