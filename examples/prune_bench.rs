//! The engine of `bench/prune_bench.sh` (issue 14 item 5): prune of a ~1 GB archive
//! where ~10 % expired, beside Cyrus 3.6's `ctl_backups compact` on the same mail, in
//! one run.
//!
//! It starts a private real Cyrus 3.6 (the test sandbox, Cyrus's own `master`) with
//! `cyrvaultd` and Cyrus's own `backupd` as SERVICES, APPENDs `MB` megabytes of
//! generated mail (mostly base64 attachments, as real mail is) for one user, and backs
//! the user up both ways: `cyrvault backup` (run 1) and Cyrus's `sync_client -u` into
//! `backupd`. Then every tenth message (about `EXPIRE` % of the bytes) is expunged,
//! replicated to `backupd` (which marks it expunged) and purged (`cyr_expire -X 0`),
//! both backups run again, and, with the page cache
//! dropped before each:
//!
//! * `cyrvault prune USER --keep-last 1` (run 1 goes, and with it the expired
//!   messages), `cyrvault verify`, `gzip -t`;
//! * `ctl_backups -F compact -u USER` (`backup_retention: 1s`, so it drops the same
//!   expired messages).
//!
//! Prints `key=value` lines the script turns into a table. Needs root.
//!
//! Usage: `prune_bench WORK_DIR BIN_DIR [MB] [EXPIRE_EVERY] [scatter|cluster]`
//!
//! `scatter` (default): every `EXPIRE_EVERY`-th message expires, spread over the whole
//! archive (so nearly every member mixes kept and expired messages: the worst case for
//! a compaction that copies whole members). `cluster`: the same share of messages,
//! appended one after another in the middle of the load (old mail deleted in bulk).
#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use cyrvault_testkit::sandbox::{Listen, MailGen, Sandbox, SandboxOptions, ServiceLine};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

type BoxError = Box<dyn std::error::Error>;

const USER: &str = "bigbox";
const SECRET: &[u8] = b"prune-bench-secret-0123456789abcdefgh\n";

fn say(msg: &str) {
    eprintln!("[prune_bench] {msg}");
}

fn cyrus_dir(p: &Path) -> Result<(), BoxError> {
    fs::create_dir_all(p)?;
    let cyrus = nix::unistd::User::from_name("cyrus")?.ok_or("no cyrus user")?;
    nix::unistd::chown(p, Some(cyrus.uid), Some(cyrus.gid))?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o750))?;
    Ok(())
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// User + system CPU seconds of the children waited for so far.
fn children_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |u| {
        let t = |v: nix::sys::time::TimeVal| v.tv_sec() as f64 + v.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = fs::write("/proc/sys/vm/drop_caches", "3\n");
}

fn run(cmd: &mut Command, what: &str) -> Result<(f64, String), BoxError> {
    let t0 = Instant::now();
    let out = cmd.stdin(Stdio::null()).output()?;
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
        .into());
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Cyrus's backup data file of the user (the largest file of the backup partition
/// that is not an index).
fn cyrus_backup_file(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(".index")
                && let Ok(m) = fs::metadata(&p)
                && best.as_ref().is_none_or(|(s, _)| m.len() > *s)
            {
                best = Some((m.len(), p));
            }
        }
    }
    best.map(|b| b.1)
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: prune_bench WORK_DIR BIN_DIR [MB] [EXPIRE_EVERY]".into());
    }
    let work = PathBuf::from(&args[1]);
    let bin = fs::canonicalize(&args[2])?;
    let mb: u64 = args.get(3).map_or(Ok(1000), |s| s.parse())?;
    let every: usize = args.get(4).map_or(Ok(10), |s| s.parse())?;
    let cluster = args.get(5).is_some_and(|m| m == "cluster");
    fs::create_dir_all(&work)?;
    fs::set_permissions(&work, fs::Permissions::from_mode(0o755))?;
    let backup_part = work.join("cyrus-backups");
    let staging = work.join("cyrus-staging");
    cyrus_dir(&backup_part)?;
    cyrus_dir(&staging)?;
    let secret = work.join("secret");
    fs::write(&secret, SECRET)?;
    let cyrus = nix::unistd::User::from_name("cyrus")?.ok_or("no cyrus user")?;
    nix::unistd::chown(&secret, Some(cyrus.uid), Some(cyrus.gid))?;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600))?;
    let backup_port = free_port()?;
    let sb = Sandbox::start(SandboxOptions {
        name_hint: "prunebench".into(),
        extra_services: vec![
            ServiceLine::tcp("cyrvaultd", &bin.join("cyrvaultd").display().to_string()),
            ServiceLine {
                listen: Listen::Tcp(backup_port),
                ..ServiceLine::tcp("backup", "backupd")
            },
        ],
        extra_imapd_conf: vec![
            ("cyrvaultd_secret_file".into(), secret.display().to_string()),
            (
                "backuppartition-default".into(),
                backup_part.display().to_string(),
            ),
            ("backup_staging_path".into(), staging.display().to_string()),
            // Expired content goes at the first compact after the expunge.
            ("backup_retention".into(), "1s".into()),
            ("bk_sync_host".into(), "127.0.0.1".into()),
            ("bk_sync_port".into(), backup_port.to_string()),
            ("bk_sync_authname".into(), "cyrus".into()),
            ("bk_sync_password".into(), "secret".into()),
            ("sync_log".into(), "no".into()),
        ],
        ..Default::default()
    })?;
    let addr = sb.service_addrs["cyrvaultd"].to_string();
    say(&format!("sandbox at {}", sb.root.display()));

    // The mail: ~MB megabytes in four folders, sizes 60 KB - 1.5 MB.
    let t0 = Instant::now();
    sb.create_user(USER, None)?;
    let folders = ["INBOX", "INBOX.Work", "INBOX.Lists", "INBOX.Archive"];
    for f in &folders[1..] {
        sb.create_folder(USER, f.trim_start_matches("INBOX."), None)?;
    }
    let mut c = sb.login(USER)?;
    let mut mail = MailGen::new(2026).with_max_size(2_000_000);
    let mut rng = SmallRng::seed_from_u64(7);
    let (mut total, mut n, mut expired_bytes, mut expired_n) = (0u64, 0usize, 0u64, 0usize);
    let mut doomed: Vec<(String, u32)> = Vec::new();
    while total < mb * 1_000_000 {
        let size = rng.gen_range(60_000..1_500_000);
        let m = mail.message_of_size(size);
        let f = folders[n % folders.len()];
        let uid = c
            .append(f, &[], Some(m.date), &m.bytes)?
            .map_or(0, |(_, u)| u);
        let doom = if cluster {
            // the middle 1/every of the bytes
            let at = total as f64 / (mb * 1_000_000) as f64;
            let lo = 0.5 - 0.5 / every as f64;
            at >= lo && at < lo + 1.0 / every as f64
        } else {
            n % every == every - 1
        };
        if doom {
            doomed.push((f.to_string(), uid));
            expired_bytes += m.bytes.len() as u64;
            expired_n += 1;
        }
        total += m.bytes.len() as u64;
        n += 1;
    }
    say(&format!(
        "loaded {n} messages, {total} bytes in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    let conf = sb.imapd_conf.display().to_string();
    let vault = work.join("vault");
    let cyrvault = |args: &[&str]| {
        let mut cmd = Command::new(bin.join("cyrvault"));
        cmd.args(args).arg("--vault").arg(&vault);
        cmd
    };
    let backup_cmd = || {
        let mut c = cyrvault(&["backup", USER, "--server", &addr, "--json"]);
        c.arg("--secret-file").arg(&secret);
        c
    };
    let sync_client = || {
        let mut cmd = sb.cyrus_command(Path::new("/usr/lib/cyrus/bin/sync_client"));
        cmd.args(["-C", &conf, "-n", "bk", "-u", USER]);
        cmd
    };
    let (t, _) = run(&mut backup_cmd(), "cyrvault backup")?;
    say(&format!("cyrvault backup (run 1): {t:.1} s"));
    let (t, _) = run(&mut sync_client(), "sync_client")?;
    say(&format!("Cyrus sync_client -> backupd: {t:.1} s"));

    // Every tenth message expunged and purged.
    for (f, uid) in &doomed {
        c.select(f)?;
        c.uid_store(&uid.to_string(), "+FLAGS", &["\\Deleted"])?;
        c.expunge()?;
    }
    c.logout()?;
    // Cyrus's backup learns of an expunge from the records sync_client sends with
    // the \Expunged flag (delayed expunge), so it replicates before the purge; a
    // record purged first is never marked expunged there and its message is kept.
    run(&mut sync_client(), "sync_client")?;
    sb.tool_ok("cyr_expire", &["-X", "0", "-D", "0", "-E", "1"])?;
    let (t, _) = run(&mut backup_cmd(), "cyrvault backup")?;
    say(&format!("cyrvault backup (run 2): {t:.1} s"));
    run(&mut sync_client(), "sync_client")?;
    std::thread::sleep(std::time::Duration::from_secs(2));

    let ua = cyrvault_host::admin::find_user(&vault, USER)?;
    let before = fs::metadata(&ua.archive)?.len();
    let cyrus_file = cyrus_backup_file(&backup_part).ok_or("no Cyrus backup file")?;
    let cyrus_before = fs::metadata(&cyrus_file)?.len();

    if std::env::var_os("PRUNE_BENCH_KEEP").is_some() {
        // A copy of the vault before the prune, to run it again by hand.
        let _ = Command::new("cp")
            .arg("-a")
            .arg(&vault)
            .arg(work.join("vault.before"))
            .status();
    }
    drop_caches();
    let cpu0 = children_cpu();
    let (prune_s, out) = run(
        &mut cyrvault(&["prune", USER, "--keep-last", "1", "--json"]),
        "cyrvault prune",
    )?;
    let prune_cpu = children_cpu() - cpu0;
    let rep: serde_json::Value = serde_json::from_str(&out)?;
    let u = &rep["users"][0];
    let after = fs::metadata(&ua.archive)?.len();
    say(&format!(
        "cyrvault prune: {prune_s:.2} s, {before} -> {after} bytes"
    ));
    drop_caches();
    let (verify_s, _) = run(&mut cyrvault(&["verify", USER]), "cyrvault verify")?;
    let (gzip_s, _) = run(Command::new("gzip").arg("-t").arg(&ua.archive), "gzip -t")?;
    let (_, tar_list) = run(Command::new("tar").arg("-tzf").arg(&ua.archive), "tar -tzf")?;

    drop_caches();
    let mut compact = sb.cyrus_command(Path::new("/usr/lib/cyrus/bin/ctl_backups"));
    compact.args(["-C", &conf, "-F", "-w", "compact", "-u", USER]);
    let cpu0 = children_cpu();
    let (compact_s, _) = run(&mut compact, "ctl_backups compact")?;
    let compact_cpu = children_cpu() - cpu0;
    let cyrus_file_after = cyrus_backup_file(&backup_part).ok_or("no Cyrus backup file")?;
    let cyrus_after = fs::metadata(&cyrus_file_after)?.len();
    say(&format!(
        "ctl_backups compact: {compact_s:.2} s, {cyrus_before} -> {cyrus_after} bytes"
    ));

    let c = &u["compaction"];
    println!("MODE={}", if cluster { "cluster" } else { "scatter" });
    println!("MESSAGES={n}");
    println!("MAIL_BYTES={total}");
    println!("EXPIRED_MESSAGES={expired_n}");
    println!("EXPIRED_BYTES={expired_bytes}");
    println!("ARCHIVE_BEFORE={before}");
    println!("ARCHIVE_AFTER={after}");
    println!("PRUNE_S={prune_s:.3}");
    println!("PRUNE_CPU_S={prune_cpu:.3}");
    println!("PRUNE_FREED_MESSAGES={}", u["messages_freed"]);
    println!("PRUNE_FREED_UNIQUE={}", u["message_bytes_freed"]);
    println!("MEMBERS_COPIED={}", c["members_copied"]);
    println!("BYTES_COPIED={}", c["bytes_copied"]);
    println!("MEMBERS_REPACKED={}", c["members_repacked"]);
    println!("BYTES_REPACKED={}", c["bytes_repacked"]);
    println!("MEMBERS_DROPPED={}", c["members_dropped"]);
    println!("MEMBERS_INSPECTED={}", c["members_inspected"]);
    println!("VERIFY_S={verify_s:.3}");
    println!("GZIP_T_S={gzip_s:.3}");
    println!("TAR_ENTRIES={}", tar_list.lines().count());
    println!("CYRUS_BEFORE={cyrus_before}");
    println!("CYRUS_AFTER={cyrus_after}");
    println!("COMPACT_S={compact_s:.3}");
    println!("COMPACT_CPU_S={compact_cpu:.3}");
    println!(
        "LOADAVG={}",
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    drop(sb);
    Ok(())
}
