//! The restore benchmark of issue #12 item 4 (run by `bench/restore_bench.sh`).
//!
//! Loads a `gen_corpus.py` corpus into a private real Cyrus 3.6 (the lost server) that
//! runs both `cyrvaultd` and Cyrus's own `backupd`; backs it up both ways (`cyrvault
//! backup --all`, and Cyrus's `sync_client -n backup -A` into backupd); then, each
//! into a fresh Cyrus (the replacement) and with the page cache dropped first, times:
//! the largest user with `cyrvault restore --exact`, with Cyrus's own `restore -U -a`
//! and with `cyrvault restore` over IMAP; then every user with `cyrvault restore --all
//! --exact --jobs 2`, with Cyrus's `restore` (two users at a time, one process each)
//! and with `cyrvault restore --all` over IMAP. After each step the messages on the
//! replacement are counted over IMAP against the lost server. Prints a markdown table.
//!
//! Usage: `restore_bench CORPUS_DIR WORK_DIR BIN_DIR` (BIN_DIR holds the release
//! `cyrvault` and `cyrvaultd`). Not a test: `cargo test` builds it, never runs it.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cyrvault_testkit::sandbox::corpus::{load, scan_corpus};
use cyrvault_testkit::sandbox::{Listen, Sandbox, SandboxOptions, ServiceLine};

type BoxError = Box<dyn std::error::Error>;

const SECRET: &[u8] = b"bench-secret-0123456789abcdefghijklm\n";

fn free_port() -> Result<u16, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = fs::write("/proc/sys/vm/drop_caches", "3\n");
}

/// A fresh replacement server: IMAP, sync_server, timsieved.
fn target(name: &str) -> Result<Sandbox, BoxError> {
    Ok(Sandbox::start(SandboxOptions {
        name_hint: name.into(),
        extra_services: vec![
            ServiceLine::tcp("syncserver", "sync_server"),
            ServiceLine::tcp("sieve", "timsieved"),
        ],
        ..Default::default()
    })?)
}

/// Messages per user as IMAP counts them (every folder's MESSAGES).
fn count(sb: &Sandbox, users: &[String]) -> Result<BTreeMap<String, u64>, BoxError> {
    let mut out = BTreeMap::new();
    for u in users {
        let mut c = sb.admin_as(u)?;
        let mut n = 0;
        for e in c.list("", "*")? {
            if e.name.starts_with("INBOX") {
                n += c
                    .status(&e.name, "(MESSAGES)")?
                    .first()
                    .map_or(0, |(_, v)| *v);
            }
        }
        c.logout()?;
        out.insert(u.clone(), n);
    }
    Ok(out)
}

/// Clock ticks of CPU (user + system) in `/proc/<pid>/stat`, fields from 14 on:
/// (own, reaped children's).
fn proc_ticks(pid: &str) -> Option<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    Some((f.get(11)? + f.get(12)?, f.get(13)? + f.get(14)?))
}

/// CPU seconds so far of this process's reaped children (the restore commands).
fn client_cpu() -> f64 {
    proc_ticks("self").map_or(0.0, |(_, c)| c as f64 / 100.0)
}

/// CPU seconds so far of a Cyrus instance: every process started with its imapd.conf
/// (master and its services), plus what master's reaped children used.
fn server_cpu(sb: &Sandbox) -> f64 {
    let conf = sb.imapd_conf.display().to_string();
    let mut ticks = 0;
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !cmd.contains(&conf) {
            continue;
        }
        if let Some((own, reaped)) = proc_ticks(&pid) {
            ticks += own;
            if cmd.contains("/master ") || cmd.contains("master -M") {
                ticks += reaped;
            }
        }
    }
    ticks as f64 / 100.0
}

/// CPU used between two readings: (client, server).
struct Meter<'a> {
    sb: &'a Sandbox,
    client: f64,
    server: f64,
}

impl<'a> Meter<'a> {
    fn start(sb: &'a Sandbox) -> Meter<'a> {
        Meter {
            sb,
            client: client_cpu(),
            server: server_cpu(sb),
        }
    }
    fn read(&self) -> (f64, f64) {
        (
            client_cpu() - self.client,
            server_cpu(self.sb) - self.server,
        )
    }
}

/// Whether Cyrus's own backup and restore run too (`SKIP_CYRUS=1`: only cyrvault's
/// rows, for quick runs while working; the reference needs them).
fn with_cyrus() -> bool {
    std::env::var("SKIP_CYRUS").map_or(true, |v| v != "1")
}

/// Whether step `name` runs: `STEPS` (comma-separated: exact1, cyrus1, imap1, exactall,
/// cyrusall, imapall) names the ones to run; unset: all.
fn step(name: &str) -> bool {
    std::env::var("STEPS").map_or(true, |s| s.split(',').any(|x| x.trim() == name))
}

/// `REPEAT` times each step (each time into a fresh Cyrus; one row each): 1 unless set.
fn repeat() -> usize {
    std::env::var("REPEAT")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
}

/// With `PERF_DIR` set, `perf record -a -g` of the whole machine while `what` runs,
/// into `PERF_DIR/<what>.data` (profiling runs only: it costs CPU).
fn perf_start(what: &str) -> Option<std::process::Child> {
    let dir = std::env::var_os("PERF_DIR")?;
    let name: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let out = Path::new(&dir).join(format!("{name}.data"));
    Command::new("perf")
        .args(["record", "-a", "-g", "-F", "499", "-q", "-o"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()
}

fn perf_stop(p: Option<std::process::Child>) {
    if let Some(mut p) = p {
        let _ = Command::new("kill")
            .args(["-INT", &p.id().to_string()])
            .status();
        let _ = p.wait();
    }
}

/// Run a command, fail with its output if it fails; return its wall time.
fn timed(what: &str, cmd: &mut Command) -> Result<f64, BoxError> {
    drop_caches();
    let perf = perf_start(what);
    let t = Instant::now();
    let out = cmd.output()?;
    let secs = t.elapsed().as_secs_f64();
    perf_stop(perf);
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(secs)
}

struct Row {
    what: String,
    secs: f64,
    bytes: u64,
    msgs: u64,
    ok: bool,
    /// CPU seconds: the restoring client, the target Cyrus.
    cpu: (f64, f64),
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: restore_bench CORPUS_DIR WORK_DIR BIN_DIR".into());
    }
    let corpus = PathBuf::from(&args[1]);
    let work = PathBuf::from(&args[2]);
    let bin = fs::canonicalize(&args[3])?;
    let cyrvault = bin.join("cyrvault");
    let daemon = bin.join("cyrvaultd");
    fs::create_dir_all(&work)?;
    fs::set_permissions(&work, fs::Permissions::from_mode(0o755))?;
    let cyrus = nix::unistd::User::from_name("cyrus")?.ok_or("no user cyrus")?;
    let secret = work.join("secret");
    fs::write(&secret, SECRET)?;
    nix::unistd::chown(&secret, Some(cyrus.uid), Some(cyrus.gid))?;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600))?;
    let password = work.join("password");
    fs::write(&password, "x\n")?;
    // Cyrus's backupd stores under here (its `backuppartition-default`).
    let cbk = work.join("cyrus-backups");
    let staging = work.join("cyrus-backup-staging");
    for d in [&cbk, &staging] {
        fs::create_dir_all(d)?;
        nix::unistd::chown(d, Some(cyrus.uid), Some(cyrus.gid))?;
    }
    let backupd_port = free_port()?;
    let conf = |k: &str, v: String| (k.to_string(), v);
    let src = Sandbox::start(SandboxOptions {
        name_hint: "lost".into(),
        extra_services: vec![
            ServiceLine::tcp(
                "cyrvaultd",
                daemon.to_str().ok_or("cyrvaultd path is not UTF-8")?,
            ),
            ServiceLine {
                listen: Listen::Tcp(backupd_port),
                ..ServiceLine::tcp("backupd", "backupd")
            },
        ],
        extra_imapd_conf: vec![
            conf("cyrvaultd_secret_file", secret.display().to_string()),
            conf("backuppartition-default", cbk.display().to_string()),
            conf("backup_staging_path", staging.display().to_string()),
            conf("backup_sync_host", "127.0.0.1".into()),
            conf("backup_sync_port", backupd_port.to_string()),
            conf("backup_sync_authname", "cyrus".into()),
            conf("backup_sync_password", "x".into()),
        ],
        ..Default::default()
    })?;
    let msgs = scan_corpus(&corpus)?;
    let refs: Vec<_> = msgs.iter().collect();
    let t = Instant::now();
    load(&src, &refs, true)?;
    eprintln!(
        "restore_bench: loaded {} messages in {:.1} s",
        msgs.len(),
        t.elapsed().as_secs_f64()
    );
    let mut users: Vec<String> = msgs.iter().map(|m| m.user.clone()).collect();
    users.dedup();
    users.sort();
    users.dedup();
    let want = count(&src, &users)?;
    let total_msgs: u64 = want.values().sum();

    // Both backups.
    let vault = work.join("vault");
    let _ = fs::remove_dir_all(&vault);
    let addr = src.service_addrs["cyrvaultd"].to_string();
    let secs = timed(
        "cyrvault backup",
        Command::new(&cyrvault)
            .args(["backup", "--all", "--server", &addr, "--secret-file"])
            .arg(&secret)
            .arg("--vault")
            .arg(&vault),
    )?;
    eprintln!("restore_bench: cyrvault backup --all in {secs:.1} s");
    if with_cyrus() {
        let sync_client = Path::new(cyrvault_testkit::sandbox::CYRUS_BIN).join("sync_client");
        let secs = timed(
            "Cyrus backup",
            src.cyrus_command(&sync_client)
                .arg("-C")
                .arg(&src.imapd_conf)
                .args(["-n", "backup", "-A"]),
        )?;
        eprintln!("restore_bench: Cyrus sync_client -n backup -A in {secs:.1} s");
    }

    // The largest user, and every user's bytes as the corpus has them.
    let mut bytes: BTreeMap<String, u64> = BTreeMap::new();
    for m in &msgs {
        *bytes.entry(m.user.clone()).or_default() += m.size;
    }
    let (big, big_bytes) = bytes
        .iter()
        .max_by_key(|(_, b)| **b)
        .map(|(u, b)| (u.clone(), *b))
        .ok_or("empty corpus")?;
    let all_bytes: u64 = bytes.values().sum();
    let mut rows: Vec<Row> = Vec::new();
    let pw = password.display().to_string();
    let vault_s = vault.display().to_string();
    let ours = |t: &Sandbox, extra: &[&str]| -> Command {
        let mut c = Command::new(&cyrvault);
        c.arg("restore")
            .args(extra)
            .args(["--vault", &vault_s, "--password-file", &pw, "--json"]);
        if extra.contains(&"--exact") {
            c.args(["--sync", &t.service_addrs["syncserver"].to_string()])
                .args(["--partition", "p1"]);
        } else {
            c.args(["--imap", &t.imap_addr.to_string()])
                .args(["--sieve", &t.service_addrs["sieve"].to_string()]);
        }
        c
    };
    // Cyrus's restore reads the lost server's backups and needs the target in its
    // config (sync_port, credentials): a copy of the lost server's imapd.conf.
    let cyrus_restore = |t: &Sandbox, user: &str| -> Result<Command, BoxError> {
        let cf = work.join(format!("restore-{}.conf", t.servername));
        let mut text = fs::read_to_string(&src.imapd_conf)?;
        text.push_str(&format!(
            "sync_port: {}\nsync_authname: cyrus\nsync_password: x\n",
            t.service_addrs["syncserver"].port()
        ));
        fs::write(&cf, text)?;
        let mut c =
            src.cyrus_command(&Path::new(cyrvault_testkit::sandbox::CYRUS_BIN).join("restore"));
        c.arg("-C").arg(&cf).args(["-U", "-a", "127.0.0.1", user]);
        Ok(c)
    };
    let check = |t: &Sandbox, who: &[String]| -> Result<bool, BoxError> {
        let got = count(t, who)?;
        Ok(who.iter().all(|u| got.get(u) == want.get(u)))
    };
    let one = std::slice::from_ref(&big);
    // `ONE_JOBS=n`: `--jobs n` for the one-user restores (else the CLI's default).
    let one_jobs_n = std::env::var("ONE_JOBS").unwrap_or_default();
    let one_jobs: Vec<&str> = if one_jobs_n.is_empty() {
        Vec::new()
    } else {
        vec!["--jobs", one_jobs_n.as_str()]
    };

    for _ in 0..repeat() {
        if step("exact1") {
            let t1 = target("exact1")?;
            let meter = Meter::start(&t1);
            let secs = timed(
                "cyrvault restore --exact",
                &mut ours(&t1, &[&[big.as_str(), "--exact"], &one_jobs[..]].concat()),
            )?;
            rows.push(Row {
                what: format!("`cyrvault restore {big} --exact`"),
                secs,
                bytes: big_bytes,
                msgs: want[&big],
                ok: check(&t1, one)?,
                cpu: meter.read(),
            });
            drop(t1);
        }
        if with_cyrus() && step("cyrus1") {
            let t2 = target("cyrus1")?;
            let meter = Meter::start(&t2);
            let secs = timed("Cyrus restore", &mut cyrus_restore(&t2, &big)?)?;
            rows.push(Row {
                what: format!("Cyrus `restore -U -a` of {big}"),
                secs,
                bytes: big_bytes,
                msgs: want[&big],
                ok: check(&t2, one)?,
                cpu: meter.read(),
            });
            drop(t2);
        }
        if step("imap1") {
            let t3 = target("imap1")?;
            let meter = Meter::start(&t3);
            let secs = timed(
                "cyrvault restore over IMAP",
                &mut ours(&t3, &[&[big.as_str()], &one_jobs[..]].concat()),
            )?;
            rows.push(Row {
                what: format!("`cyrvault restore {big}` over IMAP"),
                secs,
                bytes: big_bytes,
                msgs: want[&big],
                ok: check(&t3, one)?,
                cpu: meter.read(),
            });
            drop(t3);
        }

        if step("exactall") {
            let t4 = target("exactall")?;
            let meter = Meter::start(&t4);
            let secs = timed(
                "cyrvault restore --all --exact",
                &mut ours(&t4, &["--all", "--exact", "--jobs", "2"]),
            )?;
            rows.push(Row {
                what: format!(
                    "`cyrvault restore --all --exact --jobs 2` ({} users)",
                    users.len()
                ),
                secs,
                bytes: all_bytes,
                msgs: total_msgs,
                ok: check(&t4, &users)?,
                cpu: meter.read(),
            });
            drop(t4);
        }
        if with_cyrus() && step("cyrusall") {
            let t5 = target("cyrusall")?;
            drop_caches();
            let meter = Meter::start(&t5);
            let start = Instant::now();
            let halves: Vec<Vec<&String>> = (0..2)
                .map(|k| users.iter().skip(k).step_by(2).collect())
                .collect();
            std::thread::scope(|s| -> Result<(), BoxError> {
                let handles: Vec<_> = halves
                    .iter()
                    .map(|half| {
                        let t5 = &t5;
                        let cyrus_restore = &cyrus_restore;
                        s.spawn(move || -> Result<(), String> {
                            for u in half {
                                let out = cyrus_restore(t5, u)
                                    .map_err(|e| e.to_string())?
                                    .output()
                                    .map_err(|e| e.to_string())?;
                                if !out.status.success() {
                                    return Err(format!(
                                        "Cyrus restore of {u}: {}",
                                        String::from_utf8_lossy(&out.stderr)
                                    ));
                                }
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().map_err(|_| "thread panicked")??;
                }
                Ok(())
            })?;
            rows.push(Row {
                what: format!(
                    "Cyrus `restore -U -a`, every user, two at a time ({} users)",
                    users.len()
                ),
                secs: start.elapsed().as_secs_f64(),
                bytes: all_bytes,
                msgs: total_msgs,
                ok: check(&t5, &users)?,
                cpu: meter.read(),
            });
            drop(t5);
        }
        if step("imapall") {
            let t6 = target("imapall")?;
            let meter = Meter::start(&t6);
            let secs = timed(
                "cyrvault restore --all over IMAP",
                &mut ours(&t6, &["--all", "--jobs", "2"]),
            )?;
            rows.push(Row {
                what: format!(
                    "`cyrvault restore --all --jobs 2` over IMAP ({} users)",
                    users.len()
                ),
                secs,
                bytes: all_bytes,
                msgs: total_msgs,
                ok: check(&t6, &users)?,
                cpu: meter.read(),
            });
            drop(t6);
        }
    }

    let mut table = format!(
        "Corpus: {} messages, {:.0} MB, {} users; largest user {big}: {} messages, {:.1} MB. \
         Page cache dropped before each step; each restore into a fresh Cyrus 3.6.1.\n\n\
         | restore | wall | MB/s | messages/s | CPU s: client + target Cyrus | MB per CPU-second | all messages there |\n|---|---|---|---|---|---|---|\n",
        total_msgs,
        all_bytes as f64 / 1e6,
        users.len(),
        want[&big],
        big_bytes as f64 / 1e6
    );
    for r in &rows {
        let cpu = r.cpu.0 + r.cpu.1;
        table.push_str(&format!(
            "| {} | {:.2} s | {:.1} | {:.0} | {:.2} + {:.2} | {:.0} | {} |\n",
            r.what,
            r.secs,
            r.bytes as f64 / 1e6 / r.secs,
            r.msgs as f64 / r.secs,
            r.cpu.0,
            r.cpu.1,
            r.bytes as f64 / 1e6 / cpu.max(0.01),
            if r.ok { "yes" } else { "**no**" }
        ));
    }
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    table.push_str(&format!("\nLoad average at the end: {}", load.trim()));
    println!("{table}");
    fs::write(work.join("restore-table.md"), &table)?;
    drop(src);
    Ok(())
}
