//! A corpus written by `../shared/corpus/gen_corpus.py` (`<dir>/users.txt`,
//! `<dir>/<user>/<folder>/<n>.eml`) loaded into a sandbox over IMAP: MULTIAPPEND batches
//! (LITERAL+ when the server announces it), users split over two connections. Used by
//! the benchmarks' loaders (`examples/bench_load.rs`, `examples/restore_bench.rs`).
#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};

use super::Sandbox;
use cyrvault_host::imap::{Arg, Client};

/// Errors of the loader (text for the benchmark scripts).
pub type BoxError = Box<dyn std::error::Error>;

/// Flush a MULTIAPPEND command once it carries this many message bytes...
const BATCH_BYTES: usize = 16 << 20;
/// ...or this many messages.
const BATCH_MSGS: usize = 100;

/// One message file of the corpus.
pub struct Msg {
    pub user: String,
    /// The folder as the corpus names it (`INBOX`, `Lists`, `Archive`, ...).
    pub folder: String,
    pub path: PathBuf,
    pub size: u64,
}

/// Every message of the corpus, by user, then folder, then file name (oldest first).
pub fn scan_corpus(dir: &Path) -> Result<Vec<Msg>, BoxError> {
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
pub fn imap_folder(sb: &Sandbox, folder: &str) -> String {
    if folder == "INBOX" {
        "INBOX".to_string()
    } else {
        sb.user_mailbox_name(Some(folder))
    }
}

/// APPEND `msgs` (all of one user) in MULTIAPPEND batches per folder over one connection.
pub fn append_all(sb: &Sandbox, user: &str, msgs: &[&Msg]) -> Result<(), BoxError> {
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
            bodies.push((seen, super::mailgen::to_crlf(&raw)));
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
pub fn load(sb: &Sandbox, msgs: &[&Msg], create: bool) -> Result<(), BoxError> {
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
