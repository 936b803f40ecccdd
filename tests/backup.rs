//! `cyrvault backup` against a real Cyrus sandbox (3.6; the round trip also on 3.10)
//! with the real `cyrvaultd` under Cyrus's real master: round trip against `mbexamine`, history across runs, dedup,
//! the no-change incremental, kill -9 at random instants, stock tar, the base protocol,
//! the writer lock, and an archive shorter than its catalog.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cyrvault::cyrus::Guid;
use cyrvault_host::archive::{ArchiveWriter, EntryName, parse_entry_name, read_entry_at, scan};
use cyrvault_host::backup::{self, BackupOptions, ConnectOptions, Server, UserReport};
use cyrvault_host::catalog::Catalog;
use cyrvault_host::model::{KEPT_FLAG_BITS, RecordState};
use cyrvault_host::vault::Vault;
use cyrvault_testkit::sandbox::{
    CyrusInstall, MailGen, PopulatePlan, Sandbox, SandboxOptions, ServiceLine, populate,
};
use rand::{Rng, SeedableRng};

static N: AtomicU32 = AtomicU32::new(0);

/// A sandbox with cyrvaultd under master, and a vault directory. With a secret (the
/// sandbox's), the default; without, `cyrvaultd_allow_unauthenticated` (the base
/// protocol, for the stock client's scenarios).
struct Env {
    sb: Sandbox,
    addr: String,
    secret: Option<PathBuf>,
    dir: PathBuf,
    vault: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn env(name: &str, with_secret: bool) -> Env {
    env_with(name, with_secret, Vec::new())
}

fn env_with(name: &str, with_secret: bool, extra: Vec<(String, String)>) -> Env {
    env_on(None, name, with_secret, extra)
}

/// [`env_with`] on a given Cyrus installation (None: the system's).
fn env_on(
    cyrus: Option<&CyrusInstall>,
    name: &str,
    with_secret: bool,
    extra: Vec<(String, String)>,
) -> Env {
    let dir = std::env::temp_dir().join(format!(
        "cyrvault-bk-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut conf = extra;
    if !with_secret {
        conf.push((
            "cyrvaultd_allow_unauthenticated".to_string(),
            "yes".to_string(),
        ));
    }
    let sb = Sandbox::start(SandboxOptions {
        name_hint: name.into(),
        extra_services: vec![ServiceLine::tcp(
            "cyrvaultd",
            env!("CARGO_BIN_EXE_cyrvaultd"),
        )],
        extra_imapd_conf: conf,
        cyrus: cyrus.cloned(),
        ..Default::default()
    })
    .unwrap();
    let addr = sb.service_addrs["cyrvaultd"].to_string();
    let vault = dir.join("vault");
    let secret = with_secret.then(|| sb.cyrvaultd_secret_file.clone());
    Env {
        sb,
        addr,
        secret,
        dir,
        vault,
    }
}

impl Env {
    fn connect_opts(&self) -> ConnectOptions {
        ConnectOptions {
            secret: self
                .secret
                .as_ref()
                .map(|_| self.sb.cyrvaultd_secret().unwrap()),
            ..Default::default()
        }
    }

    fn server(&self) -> Server {
        Server::connect(&self.addr, &self.connect_opts()).unwrap()
    }

    fn backup_in(&self, vault: &Path, user: &str) -> UserReport {
        let v = Vault::open(vault).unwrap();
        let mut s = self.server();
        backup::backup_user(&mut s, &v, user, &BackupOptions::default())
            .unwrap_or_else(|e| panic!("backing up {user}: {e}"))
    }

    fn backup(&self, user: &str) -> UserReport {
        self.backup_in(&self.vault, user)
    }

    fn catalog(&self, vault: &Path, user: &str) -> (Catalog, PathBuf) {
        let ua = Vault::open(vault).unwrap().user(user).unwrap().unwrap();
        (Catalog::open_existing(&ua.catalog).unwrap(), ua.archive)
    }

    fn cli(&self, vault: &Path, user: &str) -> Command {
        let mut c = Command::new(crate::bins::cyrvault());
        c.args(["backup", user, "--server", &self.addr, "--vault"])
            .arg(vault)
            .arg("--json")
            .stdin(Stdio::null());
        if let Some(s) = &self.secret {
            c.arg("--secret-file").arg(s);
        }
        c
    }
}

/// `mbexamine`'s records (uid, guid, flags, keywords, internal date, ...), system
/// flags cut to the ones we keep.
fn mbexamine(sb: &Sandbox, mailbox: &str) -> Vec<RecordState> {
    let text = sb.mbexamine(mailbox).unwrap();
    let (_, mut recs) = crate::mbexamine::record_states(&text);
    for r in &mut recs {
        r.system_flags &= KEPT_FLAG_BITS;
    }
    recs
}

fn read_message(cat: &Catalog, archive: &Path, g: &Guid) -> Vec<u8> {
    let loc = cat
        .message_loc(g)
        .unwrap()
        .unwrap_or_else(|| panic!("message {} not in the catalog", g.to_hex()));
    let mut f = File::open(archive).unwrap();
    read_entry_at(
        &mut f,
        archive,
        loc.member_offset,
        loc.offset_in_member,
        loc.size,
    )
    .unwrap()
}

/// For every live folder at `run`: the catalog's records equal mbexamine's, and every
/// message reads back from the archive hashing to its GUID. Returns (folders, messages).
fn check_against_cyrus(e: &Env, user: &str, run: u64) -> (usize, usize) {
    let (cat, archive) = e.catalog(&e.vault, user);
    let mut folders = 0;
    let mut checked = HashSet::new();
    for f in cat
        .folders_at(run)
        .unwrap()
        .into_iter()
        .filter(|f| !f.deleted)
    {
        let ours: Vec<RecordState> = cat
            .records_at(&f.uniqueid, run)
            .unwrap()
            .into_iter()
            .filter(|r| !r.is_expunged())
            .collect();
        let theirs = mbexamine(&e.sb, &f.internal_name);
        assert_eq!(ours, theirs, "folder {} ({})", f.name, f.internal_name);
        for r in &ours {
            if checked.insert(r.guid) {
                assert_eq!(Guid::of(&read_message(&cat, &archive, &r.guid)), r.guid);
            }
        }
        folders += 1;
    }
    (folders, checked.len())
}

fn all_guids(cat: &Catalog) -> HashSet<Guid> {
    let mut out = HashSet::new();
    for r in cat.runs().unwrap() {
        for f in cat.folders_at(r.run).unwrap() {
            let at = if f.deleted { f.last_run } else { r.run };
            for rec in cat.records_at(&f.uniqueid, at).unwrap() {
                if cat.has_message(&rec.guid).unwrap() {
                    out.insert(rec.guid);
                }
            }
        }
    }
    out
}

/// The two catalogs answer alike: their canonical dumps are equal (the first
/// differing lines are shown, not megabytes of dump).
fn same_dump(replayed: &Catalog, incremental: &Catalog) {
    let a = replayed.dump_canonical().unwrap();
    let b = incremental.dump_canonical().unwrap();
    if a != b {
        let (la, lb): (HashSet<&str>, HashSet<&str>) = (a.lines().collect(), b.lines().collect());
        let only_a: Vec<&&str> = la.difference(&lb).take(8).collect();
        let only_b: Vec<&&str> = lb.difference(&la).take(8).collect();
        panic!(
            "replayed catalog differs:\nonly replayed: {only_a:#?}\nonly incremental: {only_b:#?}"
        );
    }
}

/// Backup, history and incremental runs, stock tools: on Cyrus 3.6 and 3.10.
fn round_trip_history_and_stock_tools(cyrus: &CyrusInstall) {
    let e = env_on(Some(cyrus), "bkrt", true, Vec::new());
    let pop = populate(
        &e.sb,
        &PopulatePlan {
            users: vec!["alice".into(), "bob".into()],
            folders_per_user: 5,
            messages: 400,
            max_message_size: 192 * 1024,
            ..Default::default()
        },
    )
    .unwrap();
    // Both partitions hold folders.
    let parts: HashSet<&str> = pop.users.values().map(|(p, _)| p.as_str()).collect();
    assert_eq!(parts.len(), 2, "{parts:?}");

    let mut first = BTreeMap::new();
    for user in ["alice", "bob"] {
        let rep = e.backup(user);
        assert_eq!(rep.run, 1);
        assert!(rep.damage.is_empty() && rep.missing.is_empty(), "{rep:?}");
        assert_eq!(rep.folders_changed, rep.folders_seen);
        let (folders, msgs) = check_against_cyrus(&e, user, 1);
        assert_eq!(folders, rep.folders_seen);
        assert!(msgs > 100, "{user}: {msgs} messages");
        first.insert(user, rep);
    }
    let alice = &first["alice"];
    eprintln!(
        "full backup of alice: {} messages, {:.1} MB in {} ms",
        alice.messages_fetched,
        alice.bytes_fetched as f64 / 1e6,
        alice.duration_ms
    );

    // History: flags, expunge, rename, delete (make_history), then run 2.
    let (cat1, _) = e.catalog(&e.vault, "alice");
    let run1_records: BTreeMap<String, Vec<RecordState>> = cat1
        .folders_at(1)
        .unwrap()
        .into_iter()
        .map(|f| (f.uniqueid.clone(), cat1.records_at(&f.uniqueid, 1).unwrap()))
        .collect();
    drop(cat1);
    let hist = cyrvault_testkit::sandbox::make_history(&e.sb, &pop, 3).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let rep2 = e.backup("alice");
    assert_eq!(rep2.run, 2);
    // the deleted folder is in Cyrus's delayed-delete area: backed up as deleted, not gone
    assert_eq!(rep2.folders_gone, 0, "{rep2:?}");
    assert!(rep2.folders_delayed_delete >= 1, "{rep2:?}");
    check_against_cyrus(&e, "alice", 2);
    let (cat, archive) = e.catalog(&e.vault, "alice");
    // run 1 still answers as before
    for (uid, recs) in &run1_records {
        assert_eq!(
            &cat.records_at(uid, 1).unwrap(),
            recs,
            "folder {uid} at run 1"
        );
    }
    // expunged messages are still readable
    let exp: Vec<_> = hist
        .expunged
        .iter()
        .filter(|(m, _)| m == "user.alice")
        .collect();
    assert!(!exp.is_empty());
    let inbox = cat.folder_by_name_at("INBOX", 2).unwrap().unwrap();
    for (_, uid) in exp {
        let r = cat.record_at(&inbox.uniqueid, *uid, 1).unwrap().unwrap();
        assert_eq!(Guid::of(&read_message(&cat, &archive, &r.guid)), r.guid);
    }
    // the deleted folder is deleted at run 2 (with its deletion time: Cyrus still
    // holds it) and readable at run 1
    let deleted: Vec<_> = cat
        .folders_at(2)
        .unwrap()
        .into_iter()
        .filter(|f| f.deleted)
        .collect();
    assert_eq!(deleted.len(), 1);
    assert!(
        deleted[0].deleted_at.is_some() && deleted[0].present(2),
        "{deleted:?}"
    );
    assert!(!cat.records_at(&deleted[0].uniqueid, 1).unwrap().is_empty());
    drop(cat);

    // A rename alone costs a small record, not a copy.
    let mut c = e.sb.login("alice").unwrap();
    let folders = &pop.users["alice"].1;
    let victim = folders
        .iter()
        .find(|f| {
            !f.contains('/')
                && !hist
                    .renamed
                    .iter()
                    .any(|(o, _)| o.ends_with(&f.replace('/', ".")))
                && !hist
                    .deleted
                    .iter()
                    .any(|d| d.ends_with(&f.replace('/', ".")))
                && !folders.iter().any(|o| o.starts_with(&format!("{f}/")))
        })
        .expect("a leaf folder to rename")
        .clone();
    c.rename(
        &e.sb.user_mailbox_name(Some(&victim)),
        &e.sb.user_mailbox_name(Some(&format!("{victim}-moved"))),
    )
    .unwrap();
    c.logout().unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let rep3 = e.backup("alice");
    eprintln!(
        "rename of {victim}: {} bytes written, {} folders changed",
        rep3.bytes_written, rep3.folders_changed
    );
    assert!(rep3.bytes_written < 10_000, "{rep3:?}");
    assert_eq!(rep3.messages_fetched, 0);
    check_against_cyrus(&e, "alice", 3);

    // Stock tools: tar lists and extracts; every message file hashes to its name.
    let archive = Vault::open(&e.vault)
        .unwrap()
        .user("alice")
        .unwrap()
        .unwrap()
        .archive;
    let list = Command::new("tar")
        .arg("-tzf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(
        list.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let names = String::from_utf8(list.stdout).unwrap();
    assert!(names.lines().any(|l| l == "runs/000003.json"));
    let out = e.dir.join("extract");
    std::fs::create_dir_all(&out).unwrap();
    let x = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    let mut n = 0;
    for shard in std::fs::read_dir(out.join("messages")).unwrap() {
        for m in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let p = m.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            assert_eq!(Guid::of(&std::fs::read(&p).unwrap()).to_hex(), name);
            n += 1;
        }
    }
    let (cat, _) = e.catalog(&e.vault, "alice");
    assert_eq!(n as u64, cat.stats().unwrap().messages);

    // The archive alone gives the same catalog (what reindex relies on).
    let replayed = e.dir.join("replay.sqlite");
    assert_eq!(
        backup::replay_archive(&archive, &replayed).unwrap(),
        [1, 2, 3]
    );
    let again = Catalog::open_existing(&replayed).unwrap();
    same_dump(&again, &cat);
}

crate::per_cyrus!(round_trip_history_and_stock_tools);

#[test]
fn dedup_and_no_change_incremental() {
    let e = env("bkinc", true);
    // Dedup: one message in 5 folders, 10 runs with a flag change between them.
    e.sb.create_user("dd", None).unwrap();
    let msg = MailGen::new(9).message_of_size(40_000).bytes;
    for i in 0..5 {
        let f = format!("F{i}");
        e.sb.create_folder("dd", &f, None).unwrap();
        e.sb.append("dd", Some(&f), &[], None, &msg).unwrap();
    }
    let g = Guid::of(&msg);
    for run in 1..=10u64 {
        let mut c = e.sb.login("dd").unwrap();
        c.select(&e.sb.user_mailbox_name(Some(&format!("F{}", run % 5))))
            .unwrap();
        let flag = if run % 2 == 0 { "+FLAGS" } else { "-FLAGS" };
        c.uid_store("1", flag, &["\\Flagged"]).unwrap();
        c.logout().unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let rep = e.backup("dd");
        assert_eq!(rep.run, run);
        assert_eq!(rep.messages_fetched, u64::from(run == 1), "run {run}");
    }
    let (cat, archive) = e.catalog(&e.vault, "dd");
    let st = cat.stats().unwrap();
    assert_eq!(st.messages, 1);
    assert_eq!(st.unique_bytes, msg.len() as u64);
    assert!(st.raw_bytes >= 50 * msg.len() as u64, "{st:?}");
    let sc = scan(&archive).unwrap();
    let copies = sc
        .members
        .iter()
        .flat_map(|m| m.entries.iter())
        .filter(|x| parse_entry_name(&x.name) == EntryName::Message(g))
        .count();
    assert_eq!(copies, 1);
    let len = std::fs::metadata(&archive).unwrap().len();
    eprintln!(
        "dedup: 1 message of {} bytes in 5 folders x 10 runs: archive {len} bytes, raw {} bytes",
        msg.len(),
        st.raw_bytes
    );
    assert!(len < 2 * msg.len() as u64 + 200_000, "archive {len} bytes");

    // Incremental: a bigger user, full run then a run with nothing changed.
    populate(
        &e.sb,
        &PopulatePlan {
            users: vec!["inc".into()],
            folders_per_user: 6,
            messages: 900,
            max_message_size: 256 * 1024,
            fixtures: false,
            ..Default::default()
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let full = e.backup("inc");
    let again = e.backup("inc");
    assert_eq!(again.bytes_fetched, 0);
    assert_eq!(again.messages_fetched, 0);
    assert_eq!(again.folders_changed, 0, "{again:?}");
    assert_eq!(again.folders_unchanged, again.folders_seen);
    let secs = full.duration_ms as f64 / 1000.0;
    eprintln!(
        "full backup: {} messages, {:.1} MB in {:.2} s = {:.1} MB/s, {:.0} msgs/s; \
         no-change incremental {} ms = {:.2} % of the full run ({} bytes written)",
        full.messages_fetched,
        full.bytes_fetched as f64 / 1e6,
        secs,
        full.bytes_fetched as f64 / 1e6 / secs,
        full.messages_fetched as f64 / secs,
        again.duration_ms,
        100.0 * again.duration_ms as f64 / full.duration_ms as f64,
        again.bytes_written
    );
    check_against_cyrus(&e, "inc", 2);
}

#[test]
fn kill_9_at_random_instants() {
    let e = env("bkcrash", true);
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261129);
    populate(
        &e.sb,
        &PopulatePlan {
            users: vec!["crash".into()],
            folders_per_user: 4,
            messages: 500,
            max_message_size: 256 * 1024,
            fixtures: false,
            lmtp_every: 0,
            ..Default::default()
        },
    )
    .unwrap();
    // Calibrate: how long a full run of the binary takes.
    let calib = e.dir.join("calib");
    let t = Instant::now();
    let st = e.cli(&calib, "crash").output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let mut window = t.elapsed();
    eprintln!("full run of the binary: {window:?}");
    let mut gen_ = MailGen::new(77).with_max_size(128 * 1024);
    let mut mid_run = 0;
    for i in 0..20 {
        let before: HashSet<Guid> = match Vault::open(&e.vault).unwrap().user("crash").unwrap() {
            Some(ua) if ua.catalog.exists() => {
                all_guids(&Catalog::open_existing(&ua.catalog).unwrap())
            }
            _ => HashSet::new(),
        };
        let mut child = e
            .cli(&e.vault, "crash")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ms = rng.gen_range(0..=window.as_millis() as u64);
        std::thread::sleep(Duration::from_millis(ms));
        if child.try_wait().unwrap().is_none() {
            mid_run += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        let ua = Vault::open(&e.vault).unwrap().user("crash").unwrap();
        let Some(ua) = ua else {
            continue; // killed before it knew the user
        };
        if ua.archive.exists() {
            let sc = scan(&ua.archive).unwrap();
            assert!(
                sc.damage.is_empty(),
                "kill {i} after {ms} ms: {:?}",
                sc.damage
            );
        }
        // The next backup (on a copy, so the next kill still finds work) completes.
        let copy = e.dir.join(format!("copy{i}"));
        let cp = Command::new("cp")
            .arg("-a")
            .arg(&e.vault)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(cp.success());
        let t = Instant::now();
        let rep = e.backup_in(&copy, "crash");
        let took = t.elapsed();
        let (cat, archive) = e.catalog(&copy, "crash");
        let after = all_guids(&cat);
        let lost: Vec<_> = before.difference(&after).collect();
        assert!(
            lost.is_empty(),
            "kill {i}: {} committed messages lost",
            lost.len()
        );
        for g in before.iter().take(40) {
            assert_eq!(Guid::of(&read_message(&cat, &archive, g)), *g);
        }
        eprintln!(
            "kill {i} at {ms} ms: next run {} (recovery {:?}), {} messages fetched",
            rep.run, rep.recovery, rep.messages_fetched
        );
        drop(cat);
        std::fs::remove_dir_all(&copy).unwrap();
        // Give the next attempt new work: fresh mail and a flag change.
        let mut c = e.sb.login("crash").unwrap();
        for _ in 0..40 {
            let m = gen_.message().bytes;
            c.append("INBOX", &[], None, &m).unwrap();
        }
        c.logout().unwrap();
        // The next kill lands anywhere in a run like the one just measured (plus
        // process start-up).
        window = took * 3 / 2 + Duration::from_millis(40);
    }
    assert!(mid_run >= 10, "only {mid_run} kills landed mid-run");
    // Finally the real vault completes and holds everything Cyrus has.
    std::thread::sleep(Duration::from_millis(2100));
    let rep = e.backup("crash");
    check_against_cyrus(&e, "crash", rep.run);
    // Adopted members and replayed runs included, the archive alone gives the same
    // catalog.
    let (cat, archive) = e.catalog(&e.vault, "crash");
    let replayed = e.dir.join("replay.sqlite");
    let runs = backup::replay_archive(&archive, &replayed).unwrap();
    assert_eq!(
        runs,
        cat.runs()
            .unwrap()
            .iter()
            .map(|r| r.run)
            .collect::<Vec<_>>()
    );
    let again = Catalog::open_existing(&replayed).unwrap();
    same_dump(&again, &cat);
}

#[test]
fn base_protocol_lock_and_short_archive() {
    let e = env("bkbase", false);
    populate(
        &e.sb,
        &PopulatePlan {
            users: vec!["carol".into()],
            messages: 60,
            fixtures: false,
            ..Default::default()
        },
    )
    .unwrap();
    // The base protocol: no CAPABILITY, no AUTH, no SNAPSHOT; the servername learned.
    let mut s = Server::connect(
        &e.addr,
        &ConnectOptions {
            base_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.servername, e.sb.servername);
    assert!(s.extensions.is_none());
    let v = Vault::open(&e.vault).unwrap();
    let rep = backup::backup_user(&mut s, &v, "carol", &BackupOptions::default()).unwrap();
    assert_eq!(rep.run, 1);
    assert!(rep.user_state_stored);
    check_against_cyrus(&e, "carol", 1);
    assert_eq!(s.users().unwrap(), ["carol"]);
    // vault.json is derived: rebuilt from the archives' manifests.
    let before = v.user("carol").unwrap().unwrap();
    std::fs::remove_file(e.vault.join(cyrvault_host::vault::INDEX_FILE)).unwrap();
    assert!(v.user("carol").unwrap().is_none());
    assert_eq!(v.rebuild_index().unwrap(), 1);
    assert_eq!(v.user("carol").unwrap(), Some(before));

    // An unknown user is a clear failure; the others go on.
    let res = backup::backup_users(
        &mut s,
        &v,
        &["nobody".into(), "carol".into()],
        &BackupOptions::default(),
    );
    assert!(
        res[0]
            .1
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("no folders"),
        "{:?}",
        res[0].1
    );
    assert_eq!(res[1].1.as_ref().unwrap().run, 2);

    // A second writer is refused at once, and the exit status says so.
    let ua = v.user("carol").unwrap().unwrap();
    let held = ArchiveWriter::open(&ua.archive).unwrap();
    let out = e.cli(&e.vault, "carol").output().unwrap();
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked by another cyrvault writer"), "{err}");
    drop(held);
    let out = e.cli(&e.vault, "carol").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let js: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(js[0]["user"], "carol");
    assert_eq!(js[0]["ok"], true);
    assert_eq!(js[0]["report"]["bytes_fetched"], 0);
    // --all (USERS) and the human table. The base protocol cannot list shared
    // mailboxes: --all says so and exits 78 (users backed up all the same) unless
    // the admin opts out with --no-shared.
    let all = |extra: &[&str]| {
        Command::new(crate::bins::cyrvault())
            .args(["backup", "--all", "--base-protocol", "--server", &e.addr])
            .args(extra)
            .arg("--vault")
            .arg(&e.vault)
            .output()
            .unwrap()
    };
    let out = all(&[]);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot list shared mailboxes") && err.contains("--no-shared"),
        "{err}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("carol"),
        "{out:?}"
    );
    let out = all(&["--no-shared"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header[..3], ["user", "run", "folders"], "{table}");
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("carol") && row.trim_end().ends_with("ok"),
        "{table}"
    );

    // An archive shorter than its catalog is reported, never wiped or restarted.
    let len = std::fs::metadata(&ua.archive).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&ua.archive)
        .unwrap();
    f.set_len(len - 100).unwrap();
    drop(f);
    let err = backup::backup_user(&mut s, &v, "carol", &BackupOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, backup::BackupError::ShorterThanCatalog { .. }),
        "{msg}"
    );
    assert!(msg.contains("cyrvault verify"), "{msg}");
    assert_eq!(std::fs::metadata(&ua.archive).unwrap().len(), len - 100);
    let out = e.cli(&e.vault, "carol").output().unwrap();
    assert_eq!(out.status.code(), Some(65), "{out:?}");

    // Spool damage: a message file whose bytes no longer hash to its GUID is named
    // (user, folder, UID), not stored, and the run goes on.
    let file = e.sb.mbpath("user.carol").unwrap().join("1.");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let fresh = Vault::open(&e.dir.join("vault2")).unwrap();
    let rep = backup::backup_user(&mut s, &fresh, "carol", &BackupOptions::default()).unwrap();
    assert_eq!(rep.damage.len(), 1, "{rep:?}");
    let d = &rep.damage[0];
    assert_eq!(
        (d.user.as_str(), d.folder.as_str(), d.uid),
        ("carol", "INBOX", 1)
    );
    assert_eq!(d.got, Guid::of(&bytes).to_hex());
    // INBOX names a message the archive cannot hold: it is not backed up in this run
    // (the archive never had it: nothing to carry forward), and the run says why.
    assert_eq!(rep.folders_failed.len(), 1, "{rep:#?}");
    let f = &rep.folders_failed[0];
    assert_eq!(
        (f.folder.as_str(), f.class, f.carried_forward),
        ("INBOX", backup::FailureClass::Damaged, false),
        "{f}"
    );
    assert!(
        f.reason.contains("uid(s) 1 do not hash to their GUID"),
        "{f}"
    );
    assert_eq!(rep.problem_exit_code(), Some(65));
    let (cat, archive) = e.catalog(&e.dir.join("vault2"), "carol");
    let expected = Guid::from_hex(&d.expected).unwrap();
    // The damaged bytes are stored under no name; the GUID is stored only if another
    // folder held an intact copy (populate appends some messages twice).
    assert!(!cat.has_message(&Guid::of(&bytes)).unwrap());
    if cat.has_message(&expected).unwrap() {
        assert_eq!(Guid::of(&read_message(&cat, &archive, &expected)), expected);
    }
    let sc = scan(&archive).unwrap();
    assert!(sc.misnamed().is_empty());
    assert!(rep.messages_fetched > 0);
    let out = e.cli(&e.dir.join("vault3"), "carol").output().unwrap();
    assert_eq!(out.status.code(), Some(65), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spool damage: user carol folder INBOX uid 1"),
        "{err}"
    );
}

#[test]
fn renamed_user_keeps_its_archive_and_missing_archive_is_refused() {
    let e = env_with("bkren", true, vec![("allowusermoves".into(), "yes".into())]);
    populate(
        &e.sb,
        &PopulatePlan {
            users: vec!["erin".into()],
            messages: 40,
            fixtures: false,
            ..Default::default()
        },
    )
    .unwrap();
    let r1 = e.backup("erin");
    let v = Vault::open(&e.vault).unwrap();
    let ua = v.user("erin").unwrap().unwrap();
    // The admin renames the user: Cyrus keeps the INBOX UniqueID.
    let mut admin = e.sb.admin().unwrap();
    admin.rename("user.erin", "user.frank").unwrap();
    admin.logout().unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let r2 = e.backup("frank");
    assert_eq!(r2.inbox_uniqueid, r1.inbox_uniqueid);
    assert_eq!(r2.archive, ua.archive);
    assert_eq!(r2.run, 2);
    assert_eq!(r2.messages_fetched, 0, "{r2:?}");
    assert!(v.user("erin").unwrap().is_none());
    assert_eq!(v.user("frank").unwrap(), Some(ua.clone()));
    let (cat, _) = e.catalog(&e.vault, "frank");
    let users: Vec<String> = cat.runs().unwrap().into_iter().map(|r| r.user).collect();
    assert_eq!(users, ["erin", "frank"]);
    let inbox = cat.folder_by_name_at("INBOX", 2).unwrap().unwrap();
    assert_eq!(inbox.internal_name, "user.frank");
    check_against_cyrus(&e, "frank", 2);
    drop(cat);

    // The archive is gone while the catalog has runs: refused, nothing created.
    std::fs::rename(&ua.archive, e.dir.join("moved.tar.gz")).unwrap();
    let mut s = e.server();
    let err = backup::backup_user(&mut s, &v, "frank", &BackupOptions::default()).unwrap_err();
    assert!(
        matches!(err, backup::BackupError::ArchiveMissing { .. }),
        "{err}"
    );
    assert!(!ua.archive.exists());
}
