//! Issue 9, "no silent loss": every folder Cyrus holds is backed up, or the run says
//! it was not. Real Cyrus 3.6 and 3.10 sandboxes (`per_cyrus!`) with the real
//! `cyrvaultd` under master; the
//! `cyrvault` binary; `mbexamine`, `cyr_expire` and IMAP as the oracles.
//!
//! - `dot_dot_folders_backed_up_and_restored`: with `unixhierarchysep: yes` Cyrus lets a
//!   user create `INBOX/..`, `INBOX/dots/..`, `INBOX/dots/../up`; they are backed up
//!   (uuid and legacy spool layouts), equal to `mbexamine`, restored into IMAP and to
//!   eml/Maildir files that stay inside the target; then a folder whose index is
//!   damaged makes the run exit 65 and is named.
//! - `delayed_delete_folders_captured`: a folder deleted before the user's first
//!   backup, and one created and deleted between two runs, are captured with their
//!   deletion time and restored with `--run`/`--at`; `cyr_expire` removing them later
//!   leaves them restorable; a deleted folder renamed back is live again.
//! - `shared_hierarchies_backed_up_and_restored`: `shared`, `shared.Announcements` and
//!   `Lists.x` are listed by `backup --all` and `discover`, backed up by both and by a
//!   fleet run, each top-level hierarchy its own archive, and restored into IMAP.
//! - `deleted_shared_hierarchies_backed_up`: a shared hierarchy deleted as a whole
//!   (only `DELETED.<top>.*` left) is listed and backed up into the archive of its
//!   earlier runs; one created and deleted before any backup is captured.
//! - `orphan_folders_backed_up_as_their_user`: `user.x.Sub` without `user.x`, and a
//!   deleted user's `DELETED.user.x.*` tree, are listed by `--all`, `discover` and the
//!   fleet, backed up as user `x` and restored.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cyrvault::cyrus::Guid;
use cyrvault_host::backup;
use cyrvault_host::catalog::{Catalog, FolderAt};
use cyrvault_host::model::{KEPT_FLAG_BITS, RecordState};
use cyrvault_host::vault::Vault;
use cyrvault_testkit::sandbox::{CyrusInstall, Sandbox, SandboxOptions, ServiceLine};

static N: AtomicU32 = AtomicU32::new(0);
const SECRET: &str = "every-folder-secret-0123456789abcdef";

/// A sandbox with cyrvaultd under master (with a secret), a scratch directory and a
/// vault in it.
struct Env {
    sb: Sandbox,
    dir: PathBuf,
    secret: PathBuf,
    password: PathBuf,
    vault: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn env(cyrus: &CyrusInstall, name: &str, unixhs: bool, legacy: bool) -> Env {
    let dir = std::env::temp_dir().join(format!(
        "cyrvault-ef-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let owner = nix::unistd::User::from_name("cyrus").unwrap().unwrap();
    nix::unistd::chown(&secret, Some(owner.uid), Some(owner.gid)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let password = dir.join("password");
    std::fs::write(&password, "secret\n").unwrap();
    let sb = Sandbox::start(SandboxOptions {
        name_hint: name.into(),
        unixhierarchysep: unixhs,
        legacy_dirs: legacy,
        extra_services: vec![ServiceLine::tcp(
            "cyrvaultd",
            env!("CARGO_BIN_EXE_cyrvaultd"),
        )],
        extra_imapd_conf: vec![(
            "cyrvaultd_secret_file".to_string(),
            secret.display().to_string(),
        )],
        cyrus: Some(cyrus.clone()),
        ..Default::default()
    })
    .unwrap();
    let vault = dir.join("vault");
    Env {
        sb,
        dir,
        secret,
        password,
        vault,
    }
}

impl Env {
    fn addr(&self) -> String {
        self.sb.service_addrs["cyrvaultd"].to_string()
    }

    fn cyrvault(&self, args: &[&str]) -> Output {
        Command::new(crate::bins::cyrvault())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `cyrvault backup OWNERS... --json`: exit status, the per-owner JSON, stderr.
    fn backup(&self, owners: &[&str], extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
        let addr = self.addr();
        let mut args = vec!["backup"];
        args.extend_from_slice(owners);
        args.extend_from_slice(&["--server", &addr, "--json", "--secret-file"]);
        let secret = self.secret.display().to_string();
        let vault = self.vault.display().to_string();
        args.extend_from_slice(&[&secret, "--vault", &vault]);
        args.extend_from_slice(extra);
        let out = self.cyrvault(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "backup {owners:?}: {e}\nstdout {}\nstderr {stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out.status.code(), v, stderr)
    }

    /// A backup that must succeed; the owner's report.
    fn backup_ok(&self, owner: &str) -> serde_json::Value {
        let (code, v, stderr) = self.backup(&[owner], &[]);
        assert_eq!(code, Some(0), "{v:#}\n{stderr}");
        assert_eq!(v[0]["ok"], true, "{v:#}");
        v[0]["report"].clone()
    }

    /// `cyrvault restore OWNER ARGS... --vault V [--imap ... --password-file F] --json`.
    fn restore(&self, owner: &str, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
        let mut c = Command::new(crate::bins::cyrvault());
        c.arg("restore")
            .arg(owner)
            .args(args)
            .arg("--vault")
            .arg(&self.vault)
            .arg("--json")
            .stdin(Stdio::null());
        if !args.iter().any(|a| a.starts_with("--to-")) {
            c.arg("--imap")
                .arg(self.sb.imap_addr.to_string())
                .arg("--password-file")
                .arg(&self.password);
        }
        let out = c.output().unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (
            out.status.code(),
            v,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn restore_ok(&self, owner: &str, args: &[&str]) -> serde_json::Value {
        let (code, v, stderr) = self.restore(owner, args);
        assert!(
            code == Some(0) && v["failed"] == 0,
            "restore {owner} {args:?}: {code:?}\n{v:#}\n{stderr}"
        );
        v
    }

    fn catalog(&self, owner: &str) -> (Catalog, PathBuf) {
        let ua = Vault::open(&self.vault)
            .unwrap()
            .user(owner)
            .unwrap()
            .unwrap_or_else(|| panic!("{owner} not in the vault"));
        (Catalog::open_existing(&ua.catalog).unwrap(), ua.archive)
    }

    /// The admin's (external) name of an internal one, for Cyrus's tools.
    fn admin_name(&self, internal: &str) -> String {
        if self.sb.separator() == '/' {
            internal.replace('.', "/").replace('^', ".")
        } else {
            internal.to_string()
        }
    }

    /// `mbexamine`'s records of a mailbox (internal name), flags cut as we keep them,
    /// expunged ones left out.
    fn mbexamine(&self, internal: &str) -> Vec<RecordState> {
        let text = self.sb.mbexamine(&self.admin_name(internal)).unwrap();
        let (_, recs) = crate::mbexamine::record_states(&text);
        recs.into_iter()
            .map(|mut r| {
                r.system_flags &= KEPT_FLAG_BITS;
                r
            })
            .filter(|r| !r.is_expunged())
            .collect()
    }

    /// The catalog's records of a folder at a run equal mbexamine's of the mailbox.
    fn same_as_cyrus(&self, cat: &Catalog, f: &FolderAt, run: u64, internal: &str) {
        let ours: Vec<RecordState> = cat
            .records_at(&f.uniqueid, run)
            .unwrap()
            .into_iter()
            .filter(|r| !r.is_expunged())
            .collect();
        assert_eq!(ours, self.mbexamine(internal), "folder {}", f.name);
    }
}

/// A small distinct message.
fn msg(tag: &str, i: usize) -> Vec<u8> {
    format!(
        "From: t@example.org\r\nSubject: {tag} {i}\r\nMessage-ID: <{tag}.{i}@ef>\r\n\r\nbody of {tag} {i}\r\n"
    )
    .into_bytes()
}

/// GUID → copies in an IMAP folder (Cyrus's DIGEST.SHA1 is the GUID).
fn imap_guids(c: &mut cyrvault_host::imap::Client, name: &str) -> BTreeMap<Guid, usize> {
    let mut out = BTreeMap::new();
    if c.examine(name).unwrap().exists == 0 {
        return out;
    }
    for i in c.uid_fetch("1:*", "(UID DIGEST.SHA1)").unwrap() {
        let g = Guid::from_hex(i.digest_sha1.as_deref().unwrap()).unwrap();
        *out.entry(g).or_insert(0) += 1;
    }
    out
}

/// Every file below `dir` (relative paths), with its bytes.
fn files_below(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The catalog built incrementally equals the one replayed from the archive alone.
fn replay_equal(e: &Env, owner: &str) {
    let (cat, archive) = e.catalog(owner);
    let replayed = e
        .dir
        .join(format!("replay-{}.sqlite", owner.replace('%', "_")));
    let _ = std::fs::remove_file(&replayed);
    backup::replay_archive(&archive, &replayed).unwrap();
    let again = Catalog::open_existing(&replayed).unwrap();
    assert_eq!(
        again.dump_canonical().unwrap(),
        cat.dump_canonical().unwrap(),
        "{owner}: the archive alone gives the same catalog"
    );
}

fn dot_dot_folders_backed_up_and_restored(cyrus: &CyrusInstall) {
    for legacy in [false, true] {
        let e = env(cyrus, if legacy { "efdotl" } else { "efdot" }, true, legacy);
        let user = "dots";
        e.sb.create_user(user, None).unwrap();
        // Levels with `/` between them; `..` is a folder name Cyrus accepts here.
        let folders = ["..", "dots", "dots/..", "dots/../up", "a.b", "Work"];
        for f in folders {
            e.sb.create_folder(user, f, None).unwrap();
        }
        let mut want: BTreeMap<String, BTreeMap<Guid, usize>> = BTreeMap::new();
        let mut total = 0;
        for (k, f) in std::iter::once(None)
            .chain(folders.iter().map(|f| Some(*f)))
            .enumerate()
        {
            let name = e.sb.user_mailbox_name(f);
            for i in 0..(k % 4 + 1) * 3 {
                let m = msg(&format!("f{k}"), i);
                e.sb.append(user, f, &["\\Seen"], None, &m).unwrap();
                *want
                    .entry(name.clone())
                    .or_default()
                    .entry(Guid::of(&m))
                    .or_insert(0) += 1;
                total += 1;
            }
        }
        let rep = e.backup_ok(user);
        assert_eq!(rep["folders_seen"], folders.len() + 1, "{rep:#}");
        assert_eq!(rep["messages_fetched"], total, "{rep:#}");
        assert_eq!(rep["folders_failed"], serde_json::json!([]), "{rep:#}");

        // Every folder, by the name Cyrus gives it, equals mbexamine.
        let (cat, _) = e.catalog(user);
        let at1: BTreeMap<String, FolderAt> = cat
            .folders_at(1)
            .unwrap()
            .into_iter()
            .map(|f| (f.name.clone(), f))
            .collect();
        assert_eq!(
            at1.keys().cloned().collect::<BTreeSet<_>>(),
            want.keys().cloned().collect::<BTreeSet<_>>()
        );
        assert_eq!(at1["INBOX/.."].internal_name, "user.dots.^^");
        assert_eq!(
            at1["INBOX/dots/../up"].internal_name,
            "user.dots.dots.^^.up"
        );
        for f in at1.values() {
            e.same_as_cyrus(&cat, f, 1, &f.internal_name);
        }
        drop(cat);

        // Userids Cyrus accepts with `/` as separator (`a..b`, `.x`) are backed up too.
        for u in ["a..b", ".x"] {
            e.sb.create_user(u, None).unwrap();
            e.sb.create_folder(u, "..", None).unwrap();
            e.sb.append(u, None, &[], None, &msg(u, 0)).unwrap();
            e.sb.append(u, Some(".."), &[], None, &msg(u, 1)).unwrap();
            let rep = e.backup_ok(u);
            assert_eq!(rep["messages_fetched"], 2, "{u}: {rep:#}");
            let (cat, _) = e.catalog(u);
            for f in cat.folders_at(1).unwrap() {
                e.same_as_cyrus(&cat, &f, 1, &f.internal_name);
            }
        }

        // Into IMAP, under a new tree: every message of every folder comes back.
        e.restore_ok(user, &["--into", "R1"]);
        let mut c = e.sb.login(user).unwrap();
        for (name, guids) in &want {
            let parts: Vec<&str> = name.split('/').skip(1).collect();
            let target = if parts.is_empty() {
                "INBOX/R1/INBOX".to_string()
            } else {
                format!("INBOX/R1/{}", parts.join("/"))
            };
            assert_eq!(&imap_guids(&mut c, &target), guids, "{name} -> {target}");
        }
        c.logout().unwrap();

        // To files: escaped, never refused, never outside the target directory.
        let eml = e.dir.join("eml");
        e.restore_ok(user, &["--to-eml", eml.to_str().unwrap()]);
        let got = files_below(&eml);
        assert_eq!(got.len(), total, "{:?}", got.keys().collect::<Vec<_>>());
        assert!(got.contains_key(Path::new("%2E./1.eml")), "{got:?}");
        assert!(got.contains_key(Path::new("dots/%2E./up/1.eml")));
        let mut back: BTreeMap<Guid, usize> = BTreeMap::new();
        for b in got.values() {
            *back.entry(Guid::of(b)).or_insert(0) += 1;
        }
        let mut all: BTreeMap<Guid, usize> = BTreeMap::new();
        for g in want.values() {
            for (k, n) in g {
                *all.entry(*k).or_insert(0) += n;
            }
        }
        assert_eq!(back, all);
        let md = e.dir.join("maildir");
        e.restore_ok(user, &["--to-maildir", md.to_str().unwrap()]);
        let got = files_below(&md);
        let msgs = got
            .keys()
            .filter(|p| p.to_string_lossy().contains("/cur/"))
            .count()
            + got.keys().filter(|p| p.starts_with("cur")).count();
        assert_eq!(msgs, total);
        assert!(md.join(".dots.%2E%2E.up/cur").is_dir());
        assert!(md.join(".a%2Eb/cur").is_dir());

        if legacy {
            continue;
        }
        // A folder whose index is damaged: the run still commits the others, exits
        // 65 and names the folder as failed, class damaged, with the service's reason;
        // its last backup is carried forward.
        e.sb.append(user, Some("Work"), &[], None, &msg("late", 0))
            .unwrap();
        let index = e.sb.mbpath("user/dots/dots").unwrap().join("cyrus.index");
        let mut bytes = std::fs::read(&index).unwrap();
        bytes[28] ^= 0xff; // last_uid: the header CRC no longer matches
        std::fs::write(&index, &bytes).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let (code, v, stderr) = e.backup(&[user], &[]);
        assert_eq!(code, Some(65), "{v:#}\n{stderr}");
        let rep = &v[0]["report"];
        assert_eq!(v[0]["ok"], false, "{v:#}");
        let failed = rep["folders_failed"].as_array().unwrap();
        assert_eq!(failed.len(), 1, "{rep:#}");
        assert_eq!(failed[0]["folder"], "INBOX/dots");
        assert_eq!(failed[0]["class"], "damaged");
        assert_eq!(failed[0]["carried_forward"], true);
        let reason = failed[0]["reason"].as_str().unwrap();
        assert!(
            reason.contains("damaged mailbox user.dots.dots") && reason.contains("cyrus.index"),
            "{reason}"
        );
        assert!(
            stderr.contains("INBOX/dots") && stderr.contains("damaged mailbox user.dots.dots"),
            "{stderr}"
        );
        assert_eq!(
            rep["messages_fetched"], 1,
            "the other folders went on: {rep:#}"
        );
        let (cat, _) = e.catalog(user);
        let dots = cat.folder_by_name_at("INBOX/dots", 2).unwrap().unwrap();
        assert!(!dots.deleted);
        assert_eq!(
            cat.records_at(&dots.uniqueid, 2).unwrap(),
            cat.records_at(&dots.uniqueid, 1).unwrap(),
            "carried forward"
        );
        let work = cat.folder_by_name_at("INBOX/Work", 2).unwrap().unwrap();
        e.same_as_cyrus(&cat, &work, 2, "user.dots.Work");
    }
}

/// The one folder of `cat` at `run` whose name is `name`.
fn folder(cat: &Catalog, run: u64, name: &str) -> FolderAt {
    let all = cat.folders_at(run).unwrap();
    let mut hits: Vec<FolderAt> = all.iter().filter(|f| f.name == name).cloned().collect();
    assert_eq!(hits.len(), 1, "{name} at run {run}: {all:#?}");
    hits.pop().unwrap()
}

fn delayed_delete_folders_captured(cyrus: &CyrusInstall) {
    let e = env(cyrus, "efdel", false, false);
    let user = "dd";
    e.sb.create_user(user, None).unwrap();
    for i in 0..2 {
        e.sb.append(user, None, &[], None, &msg("inbox", i))
            .unwrap();
    }
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let make_and_delete = |name: &str, n: usize| -> (BTreeMap<Guid, usize>, i64, i64) {
        e.sb.create_folder(user, name, None).unwrap();
        let mut g = BTreeMap::new();
        for i in 0..n {
            let m = msg(name, i);
            e.sb.append(user, Some(name), &["\\Flagged"], None, &m)
                .unwrap();
            *g.entry(Guid::of(&m)).or_insert(0) += 1;
        }
        let t0 = now();
        let mut c = e.sb.login(user).unwrap();
        c.delete(&e.sb.user_mailbox_name(Some(name))).unwrap();
        c.logout().unwrap();
        (g, t0, now())
    };

    // Deleted before the user's first backup.
    let (early, t0, t1) = make_and_delete("Early", 3);
    let rep = e.backup_ok(user);
    assert_eq!(rep["folders_seen"], 1, "{rep:#}");
    assert_eq!(rep["folders_delayed_delete"], 1, "{rep:#}");
    assert_eq!(rep["messages_fetched"], 5, "{rep:#}");
    let (cat, _) = e.catalog(user);
    let f = folder(&cat, 1, "INBOX.Early");
    assert!(f.deleted && f.present(1), "{f:?}");
    let at = f.deleted_at.unwrap();
    assert!((t0..=t1).contains(&at), "{t0} <= {at} <= {t1}");
    assert!(
        f.internal_name.starts_with("DELETED.user.dd.Early."),
        "{f:?}"
    );
    e.same_as_cyrus(&cat, &f, 1, &f.internal_name);
    drop(cat);

    // Created and deleted between two runs.
    let (between, _, _) = make_and_delete("Between", 4);
    e.sb.create_folder(user, "Kept", None).unwrap();
    e.sb.append(user, Some("Kept"), &[], None, &msg("kept", 0))
        .unwrap();
    let rep = e.backup_ok(user);
    assert_eq!(rep["folders_delayed_delete"], 2, "{rep:#}");
    assert_eq!(rep["messages_fetched"], 5, "{rep:#}");
    let (cat, _) = e.catalog(user);
    let b = folder(&cat, 2, "INBOX.Between");
    assert!(b.deleted && b.deleted_at.is_some() && b.present(2), "{b:?}");
    e.same_as_cyrus(&cat, &b, 2, &b.internal_name);
    let run2_started = cat.runs().unwrap()[1].started;
    drop(cat);
    let ls = e.cyrvault(&[
        "ls",
        user,
        "--run",
        "2",
        "--vault",
        e.vault.to_str().unwrap(),
        "--json",
    ]);
    let ls: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let row = ls["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "INBOX.Between")
        .unwrap();
    assert_eq!(row["deleted"], true);
    assert!(row["deleted_at"].is_i64(), "{row}");

    // Named without --include-expunged: refused, with the reason and the way.
    let (code, _, stderr) = e.restore(user, &["INBOX.Between", "--run", "2", "--into", "R"]);
    assert_eq!(code, Some(66), "{stderr}");
    assert!(
        stderr.contains("only deleted folders match") && stderr.contains("--include-expunged"),
        "{stderr}"
    );
    // --run: into IMAP.
    let r = e.restore_ok(
        user,
        &[
            "INBOX.Between",
            "--run",
            "2",
            "--include-expunged",
            "--into",
            "R2",
        ],
    );
    assert_eq!(r["appended"], 4, "{r:#}");
    let mut c = e.sb.login(user).unwrap();
    assert_eq!(imap_guids(&mut c, "INBOX.R2.Between"), between);
    c.logout().unwrap();
    // --at: the run of that time holds it; Early too, and both to files.
    let at = (run2_started + 1).to_string();
    let dir = e.dir.join("at");
    e.restore_ok(
        user,
        &[
            "INBOX.Between",
            "INBOX.Early",
            "--at",
            &at,
            "--include-expunged",
            "--to-eml",
            dir.to_str().unwrap(),
        ],
    );
    let files = files_below(&dir);
    assert_eq!(files.len(), 7, "{:?}", files.keys().collect::<Vec<_>>());
    let mut got: BTreeMap<Guid, usize> = BTreeMap::new();
    for b in files.values() {
        *got.entry(Guid::of(b)).or_insert(0) += 1;
    }
    let mut both = early.clone();
    both.extend(between.clone());
    assert_eq!(got, both);

    // Cyrus finally removes them (cyr_expire): the next run finds them gone; they stay
    // restorable, as of the last run that saw them.
    e.sb.tool_ok("cyr_expire", &["-D", "0", "-u", user])
        .unwrap();
    let dump = e.sb.ctl_mboxlist_dump().unwrap();
    assert!(
        !dump
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("DELETED.") && dump[k]["mbtype"] == "e"),
        "cyr_expire removed them: {dump:#}"
    );
    let rep = e.backup_ok(user);
    assert_eq!(rep["folders_gone"], 2, "{rep:#}");
    assert_eq!(rep["folders_delayed_delete"], 0, "{rep:#}");
    let (cat, _) = e.catalog(user);
    let b3 = folder(&cat, 3, "INBOX.Between");
    assert!(b3.deleted && !b3.present(3) && b3.last_run == 2, "{b3:?}");
    assert_eq!(b3.deleted_at, b.deleted_at);
    drop(cat);
    let dir = e.dir.join("after-expire");
    e.restore_ok(
        user,
        &[
            "INBOX.Between",
            "--run",
            "3",
            "--include-expunged",
            "--to-eml",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(files_below(&dir).len(), 4);

    // Deleted, then renamed back by the admin (Cyrus's way to undelete): the same
    // folder (UniqueID) is live again.
    e.sb.create_folder(user, "Back", None).unwrap();
    e.sb.append(user, Some("Back"), &[], None, &msg("back", 0))
        .unwrap();
    e.backup_ok(user);
    let mut c = e.sb.login(user).unwrap();
    c.delete("INBOX.Back").unwrap();
    c.logout().unwrap();
    let rep = e.backup_ok(user);
    assert_eq!(rep["messages_fetched"], 0, "already held: {rep:#}");
    let (cat, _) = e.catalog(user);
    let d = folder(&cat, 5, "INBOX.Back");
    assert!(d.deleted && d.deleted_at.is_some(), "{d:?}");
    let deleted_name = d.internal_name.clone();
    drop(cat);
    let mut admin = e.sb.admin().unwrap();
    admin.rename(&deleted_name, "user.dd.Back").unwrap();
    admin.logout().unwrap();
    e.backup_ok(user);
    let (cat, _) = e.catalog(user);
    let live = folder(&cat, 6, "INBOX.Back");
    assert!(!live.deleted && live.deleted_at.is_none(), "{live:?}");
    assert_eq!(live.uniqueid, d.uniqueid);
    let names: Vec<(String, Option<i64>)> = cat
        .folder_history(&live.uniqueid)
        .unwrap()
        .into_iter()
        .map(|n| (n.internal_name, n.deleted_at))
        .collect();
    assert_eq!(
        names,
        [
            ("user.dd.Back".to_string(), None),
            (deleted_name, d.deleted_at),
            ("user.dd.Back".to_string(), None)
        ]
    );
    e.same_as_cyrus(&cat, &live, 6, "user.dd.Back");
    drop(cat);
    replay_equal(&e, user);
}

fn shared_hierarchies_backed_up_and_restored(cyrus: &CyrusInstall) {
    let e = env(cyrus, "efshared", false, false);
    e.sb.create_user("sam", None).unwrap();
    e.sb.append("sam", None, &[], None, &msg("sam", 0)).unwrap();
    let mut admin = e.sb.admin().unwrap();
    let mut want: BTreeMap<&str, BTreeMap<Guid, usize>> = BTreeMap::new();
    for (name, n) in [
        ("shared", 2),
        ("shared.Announcements", 3),
        ("Lists", 0),
        ("Lists.x", 2),
    ] {
        admin.create(name).unwrap();
        admin.setacl(name, "cyrus", "lrswipkxtecda").unwrap();
        let g = want.entry(name).or_default();
        for i in 0..n {
            let m = msg(name, i);
            admin.append(name, &[], None, &m).unwrap();
            *g.entry(Guid::of(&m)).or_insert(0) += 1;
        }
    }
    // a delayed-delete copy in a shared hierarchy is backed up too
    admin.create("shared.Old").unwrap();
    admin
        .setacl("shared.Old", "cyrus", "lrswipkxtecda")
        .unwrap();
    admin
        .append("shared.Old", &[], None, &msg("old", 0))
        .unwrap();
    admin.delete("shared.Old").unwrap();
    admin.logout().unwrap();

    // backup --all: users, then each top-level hierarchy as its own owner/archive.
    let (code, v, stderr) = e.backup(&[], &["--all"]);
    assert_eq!(code, Some(0), "{v:#}\n{stderr}");
    let owners: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["sam", "%Lists", "%shared"], "{v:#}");
    let shared = &v[2]["report"];
    assert_eq!(shared["folders_seen"], 2, "{shared:#}");
    assert_eq!(shared["folders_delayed_delete"], 1, "{shared:#}");
    let (cat, _) = e.catalog("%shared");
    let at1 = cat.folders_at(1).unwrap();
    let names: BTreeSet<&str> = at1.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["shared", "shared.Announcements", "shared.Old"])
    );
    for f in &at1 {
        e.same_as_cyrus(&cat, f, 1, &f.internal_name);
    }
    let root = at1.iter().find(|f| f.name == "shared").unwrap();
    let (_, archive) = e.catalog("%shared");
    assert!(
        archive.to_string_lossy().contains(&root.uniqueid),
        "keyed by the top-level mailbox's UniqueID: {}",
        archive.display()
    );
    drop(cat);
    let (cat, _) = e.catalog("%Lists");
    for f in cat.folders_at(1).unwrap() {
        e.same_as_cyrus(&cat, &f, 1, &f.internal_name);
    }
    drop(cat);
    replay_equal(&e, "%shared");

    // Restored like a user's folders: into IMAP under a new top-level tree.
    let r = e.restore_ok("%shared", &["--into", "Restored/s"]);
    assert_eq!(r["appended"], 5, "{r:#}");
    let mut admin = e.sb.admin().unwrap();
    for name in ["shared", "shared.Announcements"] {
        assert_eq!(
            imap_guids(&mut admin, &format!("Restored.s.{name}")),
            want[name],
            "{name}"
        );
    }
    // and back in place after a loss
    admin.delete("Lists.x").unwrap();
    admin.logout().unwrap();
    e.restore_ok("%Lists", &["Lists.x", "--run", "1"]);
    let mut admin = e.sb.admin().unwrap();
    assert_eq!(imap_guids(&mut admin, "Lists.x"), want["Lists.x"]);
    admin.logout().unwrap();

    // discover lists the hierarchies; a fleet run backs them up.
    let fleet = e.dir.join("fleet");
    std::fs::create_dir_all(&fleet).unwrap();
    let conf = fleet.join("cyrvault.conf");
    std::fs::write(
        &conf,
        format!(
            "servers: s1\ns1_address: {}\ns1_secret_file: {}\nvault: {}\nworkers: 2\n\
             batch: 10\nunit_limit: 1\nlease: 30\nretry_backoff: 0\n",
            e.addr(),
            e.secret.display(),
            fleet.join("vault").display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(crate::bins::cyrvault())
            .args(args)
            .arg("--config")
            .arg(&conf)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let found: serde_json::Value = serde_json::from_str(&run(&["discover", "--json"])).unwrap();
    // sam, %Lists, %shared, and %Restored (the restore above made that hierarchy)
    assert_eq!(found[0]["counts"]["users"], 4, "{found:#}");
    let out = run(&["run", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["ok"], 4, "{out}");
    let v = Vault::open(&fleet.join("vault")).unwrap();
    for owner in ["sam", "%shared", "%Lists", "%Restored"] {
        let ua = v.user(owner).unwrap().unwrap_or_else(|| panic!("{owner}"));
        let cat = Catalog::open_existing(&ua.catalog).unwrap();
        assert_eq!(cat.runs().unwrap().len(), 1, "{owner}");
    }
    let ua = v.user("%shared").unwrap().unwrap();
    let cat = Catalog::open_existing(&ua.catalog).unwrap();
    let ann = cat
        .folder_by_name_at("shared.Announcements", 1)
        .unwrap()
        .unwrap();
    e.same_as_cyrus(&cat, &ann, 1, "shared.Announcements");
}

/// Folders no live INBOX owns: `user.orph.Sub` whose `user.orph` record is gone
/// (removed with Cyrus's own `cyr_dbtool`, as a failed delete or `ctl_mboxlist -u`
/// leaves it), and the delayed-delete tree of a deleted user (`DELETED.user.gone.*`).
/// `backup --all`, `discover` and a fleet run list both users; each is backed up as
/// itself, equal to `mbexamine`, and restored.
fn orphan_folders_backed_up_as_their_user(cyrus: &CyrusInstall) {
    let e = env(cyrus, "eforph", false, false);
    e.sb.create_user("keep", None).unwrap();
    e.sb.append("keep", None, &[], None, &msg("keep", 0))
        .unwrap();
    let mut want: BTreeMap<&str, BTreeMap<Guid, usize>> = BTreeMap::new();
    for (user, sub, n_inbox, n_sub) in [("orph", "Sub", 1, 2), ("gone", "Sub", 2, 1)] {
        e.sb.create_user(user, None).unwrap();
        e.sb.create_folder(user, sub, None).unwrap();
        let g = want.entry(user).or_default();
        for i in 0..n_inbox {
            let m = msg(&format!("{user}-in"), i);
            e.sb.append(user, None, &[], None, &m).unwrap();
            if user == "gone" {
                *g.entry(Guid::of(&m)).or_insert(0) += 1;
            }
        }
        for i in 0..n_sub {
            let m = msg(&format!("{user}-sub"), i);
            e.sb.append(user, Some(sub), &["\\Flagged"], None, &m)
                .unwrap();
            *g.entry(Guid::of(&m)).or_insert(0) += 1;
        }
    }
    // the whole user deleted (delayed): only DELETED.user.gone.* is left
    let mut admin = e.sb.admin().unwrap();
    admin.setacl("user.gone", "cyrus", "lrswipkxtecda").unwrap();
    admin.delete("user.gone").unwrap();
    admin.logout().unwrap();
    // orph's INBOX record removed from mailboxes.db by Cyrus's own tool
    let db = e.sb.config_dir().join("mailboxes.db");
    e.sb.tool_ok(
        "cyr_dbtool",
        &[db.to_str().unwrap(), "twoskip", "delete", "Nuser\u{1f}orph"],
    )
    .unwrap();
    let dump = e.sb.ctl_mboxlist_dump().unwrap();
    // live entries (the deleted names stay in the dump as tombstones)
    let names: BTreeSet<&str> = dump
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["mbtype"] == "e")
        .map(|(k, _)| k.as_str())
        .collect();
    assert!(
        !names.contains("user.orph") && names.contains("user.orph.Sub"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("user.gone"))
            && names
                .iter()
                .filter(|n| n.starts_with("DELETED.user.gone."))
                .count()
                == 2,
        "{names:?}"
    );

    let (code, v, stderr) = e.backup(&[], &["--all"]);
    assert_eq!(code, Some(0), "{v:#}\n{stderr}");
    let owners: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["keep", "gone", "orph"], "{v:#}");
    let gone = &v[1]["report"];
    assert_eq!(gone["folders_delayed_delete"], 2, "{gone:#}");
    assert_eq!(gone["messages_fetched"], 3, "{gone:#}");
    assert_eq!(v[2]["report"]["messages_fetched"], 2, "{v:#}");
    for owner in ["gone", "orph"] {
        let (cat, _) = e.catalog(owner);
        let at1 = cat.folders_at(1).unwrap();
        assert!(!at1.is_empty(), "{owner}");
        for f in &at1 {
            e.same_as_cyrus(&cat, f, 1, &f.internal_name);
        }
        drop(cat);
        replay_equal(&e, owner);
    }
    let (cat, _) = e.catalog("orph");
    let internal: Vec<String> = cat
        .folders_at(1)
        .unwrap()
        .into_iter()
        .map(|f| f.internal_name)
        .collect();
    assert_eq!(internal, ["user.orph.Sub"]);
    drop(cat);

    // Restored: to files, every message the user had; the deleted user into IMAP
    // once the admin has created it again.
    for owner in ["orph", "gone"] {
        let dir = e.dir.join(format!("restore-{owner}"));
        e.restore_ok(
            owner,
            &["--include-expunged", "--to-eml", dir.to_str().unwrap()],
        );
        let mut got: BTreeMap<Guid, usize> = BTreeMap::new();
        for b in files_below(&dir).values() {
            *got.entry(Guid::of(b)).or_insert(0) += 1;
        }
        assert_eq!(got, want[owner], "{owner}");
    }
    e.sb.create_user("gone", None).unwrap();
    let r = e.restore_ok("gone", &["--include-expunged", "--into", "Back"]);
    assert_eq!(r["appended"], 3, "{r:#}");

    // discover lists them (PARTITIONS), a fleet run backs them up.
    let fleet = e.dir.join("fleet");
    std::fs::create_dir_all(&fleet).unwrap();
    let conf = fleet.join("cyrvault.conf");
    std::fs::write(
        &conf,
        format!(
            "servers: s1\ns1_address: {}\ns1_secret_file: {}\nvault: {}\nworkers: 1\n\
             batch: 10\nunit_limit: 1\nlease: 30\nretry_backoff: 0\n",
            e.addr(),
            e.secret.display(),
            fleet.join("vault").display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(crate::bins::cyrvault())
            .args(args)
            .arg("--config")
            .arg(&conf)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let found: serde_json::Value = serde_json::from_str(&run(&["discover", "--json"])).unwrap();
    // keep, gone (live again, with its DELETED tree), orph
    assert_eq!(found[0]["counts"]["users"], 3, "{found:#}");
    let out = run(&["run", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["ok"], 3, "{out}");
    let v = Vault::open(&fleet.join("vault")).unwrap();
    let ua = v.user("orph").unwrap().expect("orph in the fleet's vault");
    let cat = Catalog::open_existing(&ua.catalog).unwrap();
    let f = cat.folder_by_name_at("INBOX.Sub", 1).unwrap().unwrap();
    e.same_as_cyrus(&cat, &f, 1, "user.orph.Sub");
}

/// A shared hierarchy deleted as a whole (delayed delete: only `DELETED.Gone.*` left)
/// is still listed by `SHARED` and backed up into the archive of its earlier runs, as
/// deleted folders; one created and deleted before any backup is captured; both are
/// restored.
fn deleted_shared_hierarchies_backed_up(cyrus: &CyrusInstall) {
    let e = env(cyrus, "efshdel", false, false);
    let mut want: BTreeMap<&str, BTreeMap<Guid, usize>> = BTreeMap::new();
    let make = |names: &[(&'static str, usize)],
                want: &mut BTreeMap<&str, BTreeMap<Guid, usize>>| {
        let mut admin = e.sb.admin().unwrap();
        for (name, n) in names {
            admin.create(name).unwrap();
            admin.setacl(name, "cyrus", "lrswipkxtecda").unwrap();
            let top = name.split('.').next().unwrap();
            for i in 0..*n {
                let m = msg(name, i);
                admin.append(name, &[], None, &m).unwrap();
                *want
                    .entry(top)
                    .or_default()
                    .entry(Guid::of(&m))
                    .or_insert(0) += 1;
            }
        }
        admin.logout().unwrap();
    };
    let delete = |names: &[&str]| {
        let mut admin = e.sb.admin().unwrap();
        for name in names {
            admin.delete(name).unwrap();
        }
        admin.logout().unwrap();
    };
    make(&[("Gone", 1), ("Gone.x", 2)], &mut want);
    let (code, v, stderr) = e.backup(&[], &["--all"]);
    assert_eq!(code, Some(0), "{v:#}\n{stderr}");
    let (_, archive1) = e.catalog("%Gone");
    // Deleted as a whole (children first, as an admin must), and one created and
    // deleted before any backup of it.
    delete(&["Gone.x", "Gone"]);
    make(&[("Brief", 2)], &mut want);
    delete(&["Brief"]);
    let (code, v, stderr) = e.backup(&[], &["--all"]);
    assert_eq!(code, Some(0), "{v:#}\n{stderr}");
    let owners: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["%Brief", "%Gone"], "{v:#}");
    let (cat, archive2) = e.catalog("%Gone");
    assert_eq!(archive1, archive2, "the archive of its earlier run");
    assert_eq!(cat.runs().unwrap().len(), 2);
    let at2 = cat.folders_at(2).unwrap();
    assert_eq!(at2.len(), 2, "{at2:?}");
    for f in &at2 {
        assert!(f.deleted && f.deleted_at.is_some(), "{f:?}");
        assert!(f.internal_name.starts_with("DELETED.Gone"), "{f:?}");
        e.same_as_cyrus(&cat, f, 2, &f.internal_name);
    }
    drop(cat);
    let (cat, _) = e.catalog("%Brief");
    let at1 = cat.folders_at(1).unwrap();
    assert_eq!(at1.len(), 1, "{at1:?}");
    e.same_as_cyrus(&cat, &at1[0], 1, &at1[0].internal_name);
    drop(cat);
    for owner in ["%Gone", "%Brief"] {
        replay_equal(&e, owner);
        let dir = e.dir.join(format!("restore-{}", &owner[1..]));
        e.restore_ok(
            owner,
            &["--include-expunged", "--to-eml", dir.to_str().unwrap()],
        );
        let mut got: BTreeMap<Guid, usize> = BTreeMap::new();
        for b in files_below(&dir).values() {
            *got.entry(Guid::of(b)).or_insert(0) += 1;
        }
        assert_eq!(got, want[&owner[1..]], "{owner}");
    }
}

crate::per_cyrus!(
    deleted_shared_hierarchies_backed_up,
    dot_dot_folders_backed_up_and_restored,
    delayed_delete_folders_captured,
    shared_hierarchies_backed_up_and_restored,
    orphan_folders_backed_up_as_their_user,
);
