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
use std::path::PathBuf;
use std::time::Instant;

use cyrvault_testkit::sandbox::corpus::{Msg, load, scan_corpus};
use cyrvault_testkit::sandbox::{Sandbox, SandboxOptions, ServiceLine};

/// The secret cyrvaultd and `cyrvault backup` share in the benchmark.
const SECRET: &[u8] = b"bench-secret-0123456789abcdefghijklm\n";
type BoxError = Box<dyn std::error::Error>;

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
