//! Issue 10, the backup host's half, against a real Cyrus 3.6 with the real `cyrvaultd`
//! under Cyrus's master: what a user costs when nothing changed (one round trip, no
//! fsync: counted by the run's report and by `strace` on the CLI), what a changed one
//! costs (at most two fsyncs, no user-file fetch unless a user file changed), and
//! `backup --jobs N` giving the same answers in the same order as one job, and a folder
//! of thousands of messages end to end.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cyrvault_testkit::sandbox::{PopulatePlan, Sandbox, SandboxOptions, ServiceLine, populate};
use serde_json::Value;

use crate::prerequisite;

static N: AtomicU32 = AtomicU32::new(0);
const SECRET: &str = "scale-test-secret-0123456789abcdef";

/// A sandbox with cyrvaultd under master (with a secret) and a scratch directory.
struct Env {
    sb: Sandbox,
    addr: String,
    secret: PathBuf,
    dir: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn env(name: &str) -> Env {
    let dir = std::env::temp_dir().join(format!(
        "cyrvault-scale-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
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
    Env {
        sb,
        addr,
        secret,
        dir,
    }
}

impl Env {
    /// `cyrvault backup USERS... --json` into `vault`.
    fn backup_cmd(&self, vault: &Path, users: &[&str], extra: &[&str]) -> Command {
        let mut c = Command::new(crate::bins::cyrvault());
        c.arg("backup")
            .args(users)
            .args(["--server", &self.addr, "--json", "--vault"])
            .arg(vault)
            .arg("--secret-file")
            .arg(&self.secret)
            .args(extra)
            .stdin(Stdio::null());
        c
    }

    /// Run a backup and return its JSON rows (exit 0 required).
    fn backup(&self, vault: &Path, users: &[&str], extra: &[&str]) -> Vec<Value> {
        rows(self.backup_cmd(vault, users, extra))
    }

    /// Run a backup under `strace -f` and return its JSON rows and the fsync-family
    /// calls every thread of it made.
    fn backup_traced(&self, vault: &Path, users: &[&str]) -> (Vec<Value>, Vec<String>) {
        let trace = self
            .dir
            .join(format!("strace-{}", N.fetch_add(1, Ordering::SeqCst)));
        let inner = self.backup_cmd(vault, users, &["--jobs", "1"]);
        let mut c = Command::new("strace");
        c.args([
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,syncfs,sync,sync_file_range,msync",
        ])
        .arg("-o")
        .arg(&trace)
        .arg(inner.get_program())
        .args(inner.get_args())
        .stdin(Stdio::null());
        let out = rows(c);
        let calls = std::fs::read_to_string(&trace)
            .unwrap()
            .lines()
            .filter(|l| l.contains("sync"))
            .map(str::to_string)
            .collect();
        (out, calls)
    }

    /// The sieve directory of `user` (from Cyrus's own `mbpath -j`).
    fn sieve_dir(&self, user: &str) -> PathBuf {
        let pj: Value = serde_json::from_str(
            &self
                .sb
                .tool_ok("mbpath", &["-j", &format!("user.{user}")])
                .unwrap(),
        )
        .unwrap();
        PathBuf::from(pj["user"]["sieve"].as_str().unwrap())
    }
}

fn rows(mut c: Command) -> Vec<Value> {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}\n{}",
        c,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn strace_present() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn report<'a>(rows: &'a [Value], user: &str) -> &'a Value {
    let r = rows
        .iter()
        .find(|r| r["user"] == user)
        .unwrap_or_else(|| panic!("no row for {user}: {rows:?}"));
    assert_eq!(r["ok"], true, "{r}");
    &r["report"]
}

#[test]
fn unchanged_costs_one_round_trip_and_no_fsync_changed_at_most_two() {
    let test = "scale::unchanged_costs_one_round_trip_and_no_fsync_changed_at_most_two";
    if !strace_present() {
        return prerequisite::missing(test, "strace (to count fsyncs)");
    }
    let e = env("cost");
    populate(
        &e.sb,
        &PopulatePlan {
            users: vec!["ana".into(), "ben".into()],
            folders_per_user: 5,
            messages: 120,
            max_message_size: 64 * 1024,
            fixtures: false,
            ..Default::default()
        },
    )
    .unwrap();
    // A sieve script compiled by Cyrus's sievec and made active as Cyrus does.
    let sieve = e.sieve_dir("ana");
    std::fs::create_dir_all(&sieve).unwrap();
    std::fs::write(sieve.join("main.script"), "keep;\r\n").unwrap();
    e.sb.tool_ok(
        "sievec",
        &[
            sieve.join("main.script").to_str().unwrap(),
            sieve.join("main.bc").to_str().unwrap(),
        ],
    )
    .unwrap();
    std::os::unix::fs::symlink("main.bc", sieve.join("defaultbc")).unwrap();
    // Past the racy window: the first run reads everything once and for all.
    std::thread::sleep(Duration::from_millis(2100));
    let vault = e.dir.join("vault");
    let first = e.backup(&vault, &["ana", "ben"], &[]);
    let run1 = report(&first, "ana")["run"].as_u64().unwrap();
    assert!(report(&first, "ana")["user_state_stored"] == true);

    // Nothing changed: one round trip, no fsync at all (report and strace agree),
    // no new run, and the check is recorded for `list --stale`.
    let (again, syncs) = e.backup_traced(&vault, &["ana", "ben"]);
    for u in ["ana", "ben"] {
        let r = report(&again, u);
        assert_eq!(r["unchanged"], true, "{u}: {r}");
        assert_eq!(r["round_trips"], 1, "{u}: {r}");
        assert_eq!(r["fsyncs"], 0, "{u}: {r}");
        assert_eq!(r["bytes_written"], 0, "{u}: {r}");
        assert_eq!(r["run"], report(&first, u)["run"], "{u}: no new run");
    }
    assert!(syncs.is_empty(), "an unchanged backup synced: {syncs:#?}");
    let list = Command::new(crate::bins::cyrvault())
        .args(["list", "--json", "--vault"])
        .arg(&vault)
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    for u in list["users"].as_array().unwrap() {
        assert!(u["last_checked"].as_i64().is_some(), "{u}");
        assert_eq!(u["stale"], false, "{u}");
    }

    // New mail in one folder of ana: FMULTISTATUS (with the user-file listing), FMETA,
    // FDATA; no user-file fetch (no SNAPSHOT); the archive member and the manifest
    // member synced, the catalog commit not.
    let mut c = e.sb.login("ana").unwrap();
    c.append("INBOX", &[], None, b"Subject: new\r\n\r\nnew mail\r\n")
        .unwrap();
    c.logout().unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let (changed, syncs) = e.backup_traced(&vault, &["ana", "ben"]);
    let r = report(&changed, "ana");
    assert_eq!(r["unchanged"], false, "{r}");
    assert_eq!(r["run"], run1 + 1, "{r}");
    assert_eq!(r["folders_changed"], 1, "{r}");
    assert_eq!(r["messages_fetched"], 1, "{r}");
    assert_eq!(
        r["round_trips"], 3,
        "FMULTISTATUS+USERFILES, FMETA, FDATA: {r}"
    );
    assert_eq!(r["user_state_stored"], false, "{r}");
    // The content member and the manifest member: strace sees exactly those (so the
    // count above is not an empty trace).
    assert_eq!(r["fsyncs"], 2, "{r}");
    assert_eq!(report(&changed, "ben")["unchanged"], true);
    eprintln!("changed ana + unchanged ben: {syncs:#?}");
    assert_eq!(
        syncs.len(),
        2,
        "a changed user and an unchanged one synced {} times: {syncs:#?}",
        syncs.len()
    );

    // A sieve script changes (no folder does): the listing says so, the user files are
    // fetched (one round trip more) and stored in a new run.
    std::fs::write(sieve.join("main.script"), "discard;\r\n").unwrap();
    e.sb.tool_ok(
        "sievec",
        &[
            sieve.join("main.script").to_str().unwrap(),
            sieve.join("main.bc").to_str().unwrap(),
        ],
    )
    .unwrap();
    let sieved = e.backup(&vault, &["ana"], &["--jobs", "1"]);
    let r = report(&sieved, "ana");
    assert_eq!(r["unchanged"], false, "{r}");
    assert_eq!(r["folders_changed"], 0, "{r}");
    assert_eq!(r["user_state_stored"], true, "{r}");
    assert_eq!(r["round_trips"], 2, "status, USERFILES FETCH: {r}");
    let ua = cyrvault_host::vault::Vault::open(&vault)
        .unwrap()
        .user("ana")
        .unwrap()
        .unwrap();
    let cat = cyrvault_host::catalog::Catalog::open_read_only(&ua.catalog).unwrap();
    let last = cat.last_run().unwrap().unwrap().run;
    let files = cat.user_files_at(last).unwrap();
    let script = files
        .iter()
        .find(|(_, f, _)| f.name == "main.script")
        .expect("the sieve script is in the run");
    assert_eq!(script.0, last, "stored anew by this run");
    let bytes = cyrvault_host::archive::read_entry_at(
        &mut std::fs::File::open(&ua.archive).unwrap(),
        &ua.archive,
        script.2.member_offset,
        script.2.offset_in_member,
        script.2.size,
    )
    .unwrap();
    assert_eq!(bytes, b"discard;\r\n");
    // And then it is quiet again.
    let quiet = e.backup(&vault, &["ana"], &[]);
    assert_eq!(report(&quiet, "ana")["unchanged"], true);
    let verify = Command::new(crate::bins::cyrvault())
        .args(["verify", "--all", "--vault"])
        .arg(&vault)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// The fields of a report that do not depend on timing or on which job ran it.
fn facts(r: &Value) -> Value {
    let mut v = serde_json::Map::new();
    for k in [
        "user",
        "run",
        "folders_seen",
        "folders_changed",
        "folders_unchanged",
        "messages_fetched",
        "bytes_fetched",
        "unchanged",
        "round_trips",
    ] {
        v.insert(k.into(), r[k].clone());
    }
    Value::Object(v)
}

#[test]
fn jobs_give_the_same_answers_in_the_order_given() {
    let e = env("jobs");
    let users: Vec<String> = (1..=6).map(|i| format!("j{i}")).collect();
    populate(
        &e.sb,
        &PopulatePlan {
            users: users.clone(),
            folders_per_user: 3,
            messages: 180,
            max_message_size: 32 * 1024,
            fixtures: false,
            ..Default::default()
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    // Not sorted, and one name twice: backed up once, in its first place.
    let order = ["j4", "j1", "j6", "j2", "j4", "j5", "j3"];
    let distinct = ["j4", "j1", "j6", "j2", "j5", "j3"];
    let one = e.dir.join("one");
    let many = e.dir.join("many");
    for pass in 0..2 {
        let a = e.backup(&one, &order, &["--jobs", "1"]);
        let b = e.backup(&many, &order, &["--jobs", "3"]);
        let names = |rows: &[Value]| -> Vec<String> {
            rows.iter()
                .map(|r| r["user"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(&a), distinct, "pass {pass}");
        assert_eq!(names(&b), distinct, "pass {pass}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x["ok"], true, "{x}");
            assert_eq!(facts(&x["report"]), facts(&y["report"]), "pass {pass}");
            assert_eq!(x["report"]["unchanged"], pass == 1, "{x}");
        }
    }
    for v in [&one, &many] {
        let out = Command::new(crate::bins::cyrvault())
            .args(["verify", "--all", "--vault"])
            .arg(v)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// `cyrvault ARGS... --vault VAULT`, its stdout (exit 0 required).
fn cli(vault: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new(crate::bins::cyrvault())
        .args(args)
        .arg("--vault")
        .arg(vault)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cyrvault {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The GUIDs `ls USER FOLDER --json` lists, in its order: (live, expunged).
fn ls_guids(vault: &Path, user: &str, folder: &str) -> (Vec<String>, Vec<String>) {
    let v: Value = serde_json::from_slice(&cli(vault, &["ls", user, folder, "--json"])).unwrap();
    let (mut live, mut gone) = (Vec::new(), Vec::new());
    for m in v["messages"].as_array().unwrap() {
        let g = m["guid"].as_str().unwrap().to_string();
        if m["expunged"] == true {
            gone.push(g);
        } else {
            live.push(g);
        }
    }
    (live, gone)
}

/// A folder bigger than one FDATA batch and than the listings' pages, end to end on a
/// real Cyrus: backup, ls, cat, verify, restore to files, an expunge of a third, then
/// a quiet run. `SCALE_BIG_FOLDER` raises the size (bench/big_folder.sh measures
/// 200,000); CI keeps it at 2,500 (three FDATA batches).
#[test]
fn a_big_folder_end_to_end() {
    let n: usize = std::env::var("SCALE_BIG_FOLDER")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2500);
    assert!(n > 2 * cyrvault_host::backup::FDATA_BATCH);
    let e = env("big");
    e.sb.create_user("big", None).unwrap();
    let guids = cyrvault_testkit::sandbox::fill_folder(&e.sb, "big", "INBOX", n, 700, 10).unwrap();
    let hex: Vec<String> = guids.iter().map(hex::encode).collect();
    std::thread::sleep(Duration::from_millis(2100));
    let vault = e.dir.join("vault");

    let first = e.backup(&vault, &["big"], &["--jobs", "1"]);
    let r = report(&first, "big");
    assert_eq!(r["messages_fetched"], n, "{r}");
    assert_eq!(r["folders_failed"].as_array().map_or(0, Vec::len), 0, "{r}");

    // Every message listed once, in UID order, with the GUID Cyrus has.
    let (live, gone) = ls_guids(&vault, "big", "INBOX");
    assert!(
        live == hex && gone.is_empty(),
        "ls lists {} + {}",
        live.len(),
        gone.len()
    );
    // One message from the far end of the archive, byte for byte (its SHA-1 is its GUID).
    use sha1::Digest;
    let last = cli(&vault, &["cat", "big", &hex[n - 1]]);
    assert_eq!(hex::encode(sha1::Sha1::digest(&last)), hex[n - 1]);
    let by_uid = cli(&vault, &["cat", "big", "INBOX", &n.to_string()]);
    assert_eq!(by_uid, last);
    let show: Value = serde_json::from_slice(&cli(&vault, &["show", "big", "--json"])).unwrap();
    assert!(show.to_string().contains("INBOX"), "{show}");
    cli(&vault, &["verify", "big"]);
    let eml = e.dir.join("eml");
    cli(
        &vault,
        &["restore", "big", "--to-eml", eml.to_str().unwrap()],
    );
    let want: std::collections::HashSet<&String> = hex.iter().collect();
    let mut got = std::collections::HashSet::new();
    for d in walk(&eml) {
        let b = std::fs::read(&d).unwrap();
        let g = hex::encode(sha1::Sha1::digest(&b));
        assert!(
            want.contains(&g),
            "{}: not a message of the folder",
            d.display()
        );
        got.insert(g);
    }
    assert_eq!(got.len(), n, "one .eml per message");

    // A third expunged: the next run fetches nothing and lists the rest.
    let mut c = e.sb.login("big").unwrap();
    c.run(&[
        cyrvault_host::imap::Arg::Atom("SELECT"),
        cyrvault_host::imap::Arg::Str(b"INBOX"),
    ])
    .unwrap();
    let range = format!("1:{}", n / 3);
    c.run(&[
        cyrvault_host::imap::Arg::Atom("UID STORE"),
        cyrvault_host::imap::Arg::Atom(&range),
        cyrvault_host::imap::Arg::Atom("+FLAGS.SILENT (\\Deleted)"),
    ])
    .unwrap();
    c.run(&[cyrvault_host::imap::Arg::Atom("EXPUNGE")]).unwrap();
    c.logout().unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let second = e.backup(&vault, &["big"], &["--jobs", "1"]);
    let r = report(&second, "big");
    assert_eq!(r["messages_fetched"], 0, "{r}");
    assert_eq!(r["folders_changed"], 1, "{r}");
    let (live, gone) = ls_guids(&vault, "big", "INBOX");
    assert!(
        live == hex[n / 3..] && gone == hex[..n / 3],
        "ls lists {} live + {} expunged",
        live.len(),
        gone.len()
    );
    let quiet = e.backup(&vault, &["big"], &[]);
    let r = report(&quiet, "big");
    assert_eq!(r["unchanged"], true, "{r}");
    assert_eq!(r["round_trips"], 1, "{r}");
    cli(&vault, &["verify", "big"]);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
