//! The loader of `bench/backup_bench.sh`: starts a private real Cyrus 3.6 (the test
//! sandbox, Cyrus's own `master`) with `cyrvaultd` as a SERVICES entry, loads a corpus
//! written by `gen_corpus.py` over IMAP (MULTIAPPEND batches, LITERAL+ when the server
//! announces it), holds back about 1 % of the messages, and keeps the sandbox alive
//! while the script times its steps.
//!
//! Usage: `bench_load CORPUS_DIR WORK_DIR CYRVAULTD_PATH [HOLD_EVERY]`
//!
//! Once loaded it writes `WORK_DIR/sandbox.env` (shell `KEY=value` lines: the service
//! address, the secret file, the spool directories, message and byte counts) and
//! prints `READY`. It then reads commands on stdin, one a line:
//! - `append-held`: APPEND the held-back messages, print `APPENDED <msgs> <bytes>`;
//! - `quit` or end of input: stop Cyrus and remove the sandbox.
//!
//! It is an example, not a test: `cargo test` compiles it but never runs it.
#![forbid(unsafe_code)]

use std::fs;
use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cyrvault::imap::{Arg, Client};
use cyrvault::sandbox::{Sandbox, SandboxOptions, ServiceLine};

/// The secret cyrvaultd and `cyrvault backup` share in the benchmark.
const SECRET: &[u8] = b"bench-secret-0123456789abcdefghijklm\n";
/// Flush a MULTIAPPEND command once it carries this many message bytes...
const BATCH_BYTES: usize = 16 << 20;
/// ...or this many messages.
const BATCH_MSGS: usize = 100;

type BoxError = Box<dyn std::error::Error>;

/// One message file of the corpus.
struct Msg {
    user: String,
    /// The folder as the corpus names it (`INBOX`, `Lists`, `Archive`, ...).
    folder: String,
    path: PathBuf,
    size: u64,
}

/// Every message of the corpus, by user, then folder, then file name (oldest first).
fn scan_corpus(dir: &Path) -> Result<Vec<Msg>, BoxError> {
    let mut users: Vec<String> = fs::read_to_string(dir.join("users.txt"))
        .map_err(|e| format!("reading {}/users.txt: {e}", dir.display()))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    users.sort();
    let mut out = Vec::new();
    for user in users {
        let udir = dir.join(&user);
        let mut folders: Vec<String> = fs::read_dir(&udir)
            .map_err(|e| format!("listing {}: {e}", udir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        folders.sort();
        for folder in folders {
            let fdir = udir.join(&folder);
            let mut files: Vec<PathBuf> = fs::read_dir(&fdir)
                .map_err(|e| format!("listing {}: {e}", fdir.display()))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect();
            files.sort();
            for path in files {
                let size = fs::metadata(&path)?.len();
                out.push(Msg {
                    user: user.clone(),
                    folder: folder.clone(),
                    path,
                    size,
                });
            }
        }
    }
    Ok(out)
}

/// The user's own name of a corpus folder (`Lists/dev` → `INBOX.Lists.dev`).
fn imap_folder(sb: &Sandbox, folder: &str) -> String {
    if folder == "INBOX" {
        "INBOX".to_string()
    } else {
        sb.user_mailbox_name(Some(folder))
    }
}

/// APPEND `msgs` (all of one user) in MULTIAPPEND batches per folder over one connection.
fn append_all(sb: &Sandbox, user: &str, msgs: &[&Msg]) -> Result<(), BoxError> {
    let mut c: Client = sb.login(user)?;
    let multi = c.has_capability("MULTIAPPEND");
    let mut i = 0;
    while i < msgs.len() {
        let folder = &msgs[i].folder;
        let mut bodies = Vec::new();
        let mut bytes = 0usize;
        while i < msgs.len() && &msgs[i].folder == folder {
            let raw = fs::read(&msgs[i].path)
                .map_err(|e| format!("reading {}: {e}", msgs[i].path.display()))?;
            bytes += raw.len();
            // Two of three messages read, as a mailbox that is used.
            let seen = i % 3 != 0;
            bodies.push((seen, cyrvault::sandbox::mailgen::to_crlf(&raw)));
            i += 1;
            if !multi || bytes >= BATCH_BYTES || bodies.len() >= BATCH_MSGS {
                break;
            }
        }
        let mailbox = imap_folder(sb, folder);
        let mut args = vec![Arg::Atom("APPEND"), Arg::Str(mailbox.as_bytes())];
        for (seen, body) in &bodies {
            args.push(Arg::Atom(if *seen { "(\\Seen)" } else { "()" }));
            args.push(Arg::Literal(body));
        }
        c.run(&args).map_err(|e| {
            format!(
                "APPEND of {} messages to {mailbox} of {user}: {e}",
                bodies.len()
            )
        })?;
    }
    c.logout()?;
    Ok(())
}

/// Create every user (alternating partitions p1/p2) and folder, then APPEND `msgs`,
/// the users split over two connections working in parallel.
fn load(sb: &Sandbox, msgs: &[&Msg], create: bool) -> Result<(), BoxError> {
    let mut by_user: Vec<(String, Vec<&Msg>)> = Vec::new();
    for m in msgs {
        match by_user.last_mut() {
            Some((u, v)) if *u == m.user => v.push(m),
            _ => by_user.push((m.user.clone(), vec![m])),
        }
    }
    if create {
        for (n, (user, v)) in by_user.iter().enumerate() {
            let part = if n % 2 == 0 { "p1" } else { "p2" };
            sb.create_user(user, Some(part))?;
            let mut folders: Vec<&str> = v.iter().map(|m| m.folder.as_str()).collect();
            folders.dedup();
            for f in folders.into_iter().filter(|f| *f != "INBOX") {
                sb.create_folder(user, f, None)?;
            }
        }
    }
    let halves: Vec<Vec<&(String, Vec<&Msg>)>> = (0..2)
        .map(|k| by_user.iter().skip(k).step_by(2).collect())
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = halves
            .iter()
            .map(|half| {
                s.spawn(move || -> Result<(), String> {
                    for (user, v) in half {
                        append_all(sb, user, v).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| "loader thread panicked".to_string())??;
        }
        Ok::<(), String>(())
    })?;
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: bench_load CORPUS_DIR WORK_DIR CYRVAULTD_PATH [HOLD_EVERY]".into());
    }
    let corpus = PathBuf::from(&args[1]);
    let work = PathBuf::from(&args[2]);
    // Cyrus's master runs the service from its own working directory: an absolute path.
    let daemon = fs::canonicalize(&args[3]).map_err(|e| format!("{}: {e}", args[3]))?;
    let daemon = daemon.to_str().ok_or("cyrvaultd path is not UTF-8")?;
    let hold_every: usize = args.get(4).map_or(Ok(100), |s| s.parse())?;

    fs::create_dir_all(&work)?;
    fs::set_permissions(&work, fs::Permissions::from_mode(0o755))?;
    let secret = work.join("secret");
    fs::write(&secret, SECRET)?;
    let cyrus = nix::unistd::User::from_name("cyrus")?.ok_or("no user cyrus")?;
    nix::unistd::chown(&secret, Some(cyrus.uid), Some(cyrus.gid))?;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600))?;

    let all = scan_corpus(&corpus)?;
    // Every HOLD_EVERY-th message (from the middle of each run of HOLD_EVERY) waits
    // for the incremental step.
    let (mut now, mut held) = (Vec::new(), Vec::new());
    for (n, m) in all.iter().enumerate() {
        if hold_every > 0 && n % hold_every == hold_every / 2 {
            held.push(m);
        } else {
            now.push(m);
        }
    }
    let sum = |v: &[&Msg]| v.iter().map(|m| m.size).sum::<u64>();

    let sb = Sandbox::start(SandboxOptions {
        name_hint: "bench".into(),
        extra_services: vec![ServiceLine::tcp("cyrvaultd", daemon)],
        extra_imapd_conf: vec![(
            "cyrvaultd_secret_file".to_string(),
            secret.display().to_string(),
        )],
        ..Default::default()
    })?;
    let t = Instant::now();
    load(&sb, &now, true)?;
    let load_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "bench_load: {} messages, {} bytes loaded in {load_secs:.1} s; {} held back",
        now.len(),
        sum(&now),
        held.len()
    );

    let spool: Vec<String> = sb
        .partitions
        .iter()
        .map(|(_, d)| d.display().to_string())
        .chain([sb.config_dir().display().to_string()])
        .collect();
    let env = format!(
        "ADDR={}\nSECRET_FILE={}\nSANDBOX_ROOT={}\nSPOOL_DIRS=\"{}\"\nUSERS={}\n\
         LOADED_MSGS={}\nLOADED_BYTES={}\nHELD_MSGS={}\nHELD_BYTES={}\nLOAD_SECS={load_secs:.1}\n",
        sb.service_addrs["cyrvaultd"],
        secret.display(),
        sb.root.display(),
        spool.join(" "),
        all.iter()
            .map(|m| m.user.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        now.len(),
        sum(&now),
        held.len(),
        sum(&held),
    );
    fs::write(work.join("sandbox.env"), env)?;
    let mut out = std::io::stdout();
    writeln!(out, "READY")?;
    out.flush()?;

    for line in std::io::stdin().lock().lines() {
        match line?.trim() {
            "append-held" => {
                load(&sb, &held, false)?;
                writeln!(out, "APPENDED {} {}", held.len(), sum(&held))?;
                out.flush()?;
            }
            "quit" => break,
            other => eprintln!("bench_load: unknown command {other:?}"),
        }
    }
    drop(sb);
    Ok(())
}
