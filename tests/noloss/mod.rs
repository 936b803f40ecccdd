//! Issue 9, "no silent loss", against a real Cyrus 3.6 with the real `cyrvaultd` under
//! Cyrus's real master: a run commits a folder's new state only with every message it
//! names, or reports the folder FAILED and carries its previous state forward
//! (`race.rs`: the rename race forced between FMETA and FDATA, both protocols; a
//! message file gone; `churn.rs`: four IMAP clients churning while backups run back to
//! back); `verify` catches every kind of catalog damage and never writes, `reindex`
//! refuses a damaged archive unless `--salvage` (`damage.rs`); the racy-stat rule on
//! the server's clock (`racy.rs`).

mod churn;
mod damage;
mod race;
mod racy;

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use cyrvault::cyrus::Guid;
use cyrvault_host::admin::{self, UserArchive};
use cyrvault_host::backup::{self, BackupOptions, ConnectOptions, Progress, Server, UserReport};
use cyrvault_host::catalog::Catalog;
use cyrvault_host::vault::Vault;
use cyrvault_testkit::sandbox::{Sandbox, SandboxOptions, ServiceLine};

static N: AtomicU32 = AtomicU32::new(0);

const SECRET: &[u8] = b"noloss-test-secret-0123456789abcdefg";

/// A sandbox with cyrvaultd under master and a vault directory. `base`: the service
/// has no secret and the client speaks only the base protocol (what it does against a
/// stock `backupcyrusd`).
pub struct Env {
    pub sb: Sandbox,
    pub addr: String,
    pub base: bool,
    secret: Option<PathBuf>,
    pub dir: PathBuf,
    pub vault: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn env(name: &str, base: bool) -> Env {
    let dir = std::env::temp_dir().join(format!(
        "cyrvault-nl-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut conf = Vec::new();
    if base {
        // the base protocol is served only where the operator says so
        conf.push((
            "cyrvaultd_allow_unauthenticated".to_string(),
            "yes".to_string(),
        ));
    }
    let secret = (!base).then(|| {
        let p = dir.join("secret");
        std::fs::write(&p, [SECRET, b"\n"].concat()).unwrap();
        let cyrus = nix::unistd::User::from_name("cyrus").unwrap().unwrap();
        nix::unistd::chown(&p, Some(cyrus.uid), Some(cyrus.gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        conf.push(("cyrvaultd_secret_file".to_string(), p.display().to_string()));
        p
    });
    let sb = Sandbox::start(SandboxOptions {
        name_hint: name.into(),
        extra_services: vec![ServiceLine::tcp(
            "cyrvaultd",
            env!("CARGO_BIN_EXE_cyrvaultd"),
        )],
        extra_imapd_conf: conf,
        ..Default::default()
    })
    .unwrap();
    let addr = sb.service_addrs["cyrvaultd"].to_string();
    let vault = dir.join("vault");
    Env {
        sb,
        addr,
        base,
        secret,
        dir,
        vault,
    }
}

impl Env {
    pub fn server(&self) -> Server {
        Server::connect(
            &self.addr,
            &ConnectOptions {
                secret: (!self.base).then(|| cyrvault::secret::Secret::from_bytes(SECRET).unwrap()),
                base_only: self.base,
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// One run through the library, with `progress` (a hook) if given.
    pub fn backup_with(&self, user: &str, progress: Option<Arc<dyn Progress>>) -> UserReport {
        let v = Vault::open(&self.vault).unwrap();
        let mut s = self.server();
        let opts = BackupOptions {
            progress,
            ..Default::default()
        };
        backup::backup_user(&mut s, &v, user, &opts)
            .unwrap_or_else(|e| panic!("backing up {user}: {e}"))
    }

    pub fn backup(&self, user: &str) -> UserReport {
        self.backup_with(user, None)
    }

    /// `cyrvault backup USER --json` (the binary).
    pub fn cli_backup(&self, user: &str) -> Output {
        let mut c = Command::new(crate::bins::cyrvault());
        c.args(["backup", user, "--server", &self.addr, "--vault"])
            .arg(&self.vault)
            .arg("--json")
            .stdin(Stdio::null());
        if self.base {
            c.arg("--base-protocol");
        }
        if let Some(s) = &self.secret {
            c.arg("--secret-file").arg(s);
        }
        c.output().unwrap()
    }

    /// `cyrvault ARGS... --vault V`.
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

    pub fn catalog(&self, user: &str) -> Catalog {
        Catalog::open_read_only(&self.archive(user).catalog).unwrap()
    }
}

/// Every GUID any record names at any run (deleted folders at their last run).
pub fn guids_of_every_run(cat: &Catalog) -> BTreeMap<Guid, (u64, String, u32)> {
    let mut out = BTreeMap::new();
    for r in cat.runs().unwrap() {
        for f in cat.folders_at(r.run).unwrap() {
            let at = if f.deleted { f.last_run } else { r.run };
            for rec in cat.records_at(&f.uniqueid, at).unwrap() {
                out.entry(rec.guid)
                    .or_insert((r.run, f.name.clone(), rec.uid));
            }
        }
    }
    out
}

/// Every GUID any run lists reads back with `cat` (the library call the command makes,
/// and the command itself for `cli_sample` of them), hashing to itself; and `verify` is
/// green. Returns how many GUIDs were read.
pub fn nothing_lost(e: &Env, user: &str, cli_sample: usize) -> usize {
    let ua = e.archive(user);
    let cat = Catalog::open_read_only(&ua.catalog).unwrap();
    let all = guids_of_every_run(&cat);
    for (g, (run, folder, uid)) in &all {
        let r = admin::cat_guid(&ua, g).unwrap_or_else(|err| {
            panic!("run {run} folder {folder} uid {uid}: cat {g} fails: {err}")
        });
        assert_eq!(Guid::of(&r.bytes), *g);
    }
    let step = (all.len() / cli_sample.max(1)).max(1);
    for g in all.keys().step_by(step).take(cli_sample) {
        let o = e.cli(&["cat", user, &g.to_hex()]);
        assert!(o.status.success(), "cyrvault cat {user} {g}: {o:?}");
        assert_eq!(Guid::of(&o.stdout), *g);
    }
    let v = admin::verify(&ua).unwrap();
    assert!(v.ok, "verify: {v:#?}");
    let o = e.cli(&["verify", user, "--json"]);
    assert!(o.status.success(), "{o:?}");
    all.len()
}

/// The GUIDs of a folder's records at a run.
pub fn guid_set(cat: &Catalog, uniqueid: &str, run: u64) -> HashSet<Guid> {
    cat.records_at(uniqueid, run)
        .unwrap()
        .into_iter()
        .map(|r| r.guid)
        .collect()
}
