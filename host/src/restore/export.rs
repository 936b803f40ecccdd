//! Restore out to files, for people and other systems.
//!
//! * **mbox** (`--to-mbox PATH`): mboxrd — each message after a `From ` line, lines that
//!   match `^>*From ` quoted with one more `>`, and an empty line after each message.
//!   One folder: PATH is the file; several: PATH is a directory with `<folder>.mbox`
//!   files (`INBOX.mbox`, `Archive/2023.mbox`). The message bytes are otherwise untouched (CRLF as
//!   Cyrus stores them), so flags are not written into headers.
//! * **Maildir** (`--to-maildir DIR`): Maildir++ — INBOX is `DIR` itself, folder
//!   `INBOX.A.B` is `DIR/.A.B` (a `.` inside a level written `%2E`, so no folder is
//!   refused); every message in `cur/` named
//!   `<internaldate>.<guid>.cyrvault:2,<flags>` with the flags `D` (\Draft), `F`
//!   (\Flagged), `P` ($Forwarded), `R` (\Answered), `S` (\Seen), `T` (\Deleted) in
//!   ASCII order, and its mtime set to the internal date.
//! * **eml** (`--to-eml DIR`): one `DIR/<folder path>/<uid>.eml` per message
//!   (`DIR/INBOX/17.eml`, `DIR/Archive/2023/4.eml`).
//!
//! Sieve scripts go beside them with mbox/eml exports under `sieve/` (and a file
//! `sieve/ACTIVE` naming the active script).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Plan, Progress, Source, Summary};
use crate::cyrus::Guid;
use crate::error::{Error, IoContext, Result};
use crate::model::RecordState;
use crate::time::{civil_from_days, month_abbr, split_unix, weekday};

/// The kind of export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// mboxrd file(s).
    Mbox,
    /// Maildir++ tree.
    Maildir,
    /// One `.eml` file per message.
    Eml,
}

/// The Maildir info flags of a record, in ASCII order (`DFPRST`).
pub fn maildir_flags(r: &RecordState) -> String {
    let mut f = String::new();
    let has = |bit: u32| r.system_flags & bit != 0;
    if has(8) {
        f.push('D');
    }
    if has(2) {
        f.push('F');
    }
    if r.keywords
        .iter()
        .any(|k| k.eq_ignore_ascii_case("$Forwarded"))
    {
        f.push('P');
    }
    if has(1) {
        f.push('R');
    }
    if has(16) {
        f.push('S');
    }
    if has(4) {
        f.push('T');
    }
    f
}

/// mboxrd quoting of one message: `From ` lines after `>`s get one more `>`; ends
/// with a newline.
pub fn mboxrd_body(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 64);
    for line in msg.split_inclusive(|&b| b == b'\n') {
        let body = line.iter().position(|&b| b != b'>').unwrap_or(line.len());
        if line[body..].starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

/// The `From ` separator line for a message: `From MAILER-DAEMON <asctime UTC>`.
pub fn from_line(internaldate: i64) -> String {
    let (days, secs) = split_unix(internaldate);
    let (y, m, d) = civil_from_days(days);
    let wd = weekday(days);
    let mon = month_abbr(m);
    format!(
        "From MAILER-DAEMON {wd} {mon} {d:2} {:02}:{:02}:{:02} {y}\n",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// One level of a folder name as a file name that stays inside the directory it is
/// joined to: `%`, `/`, NUL and control bytes become `%XX`, and so does a leading `.`
/// (so `.` and `..` become `%2E` and `%2E.`: Cyrus accepts `INBOX/..` as a folder).
/// With `dots`, every `.` is escaped (Maildir++ uses `.` between levels). The name
/// is data: it is escaped, never refused.
pub fn file_name_part(p: &str, dots: bool) -> String {
    let mut out = String::with_capacity(p.len() + 4);
    for (i, c) in p.chars().enumerate() {
        let escape = c == '%' || c == '/' || c.is_control() || (c == '.' && (i == 0 || dots));
        if escape {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        // an empty level (never made by Cyrus, but a name is data)
        out.push_str("%00");
    }
    out
}

/// Where a folder's messages go for this kind of export (file for mbox, directory
/// otherwise). The INBOX is `INBOX` (mbox, eml) or the Maildir root. Every level is
/// escaped with [`file_name_part`], so every path is under `root`.
fn folder_path(kind: ExportKind, root: &Path, parts: &[String], single: bool) -> PathBuf {
    let inbox = ["INBOX".to_string()];
    let named: &[String] = if parts.is_empty() { &inbox } else { parts };
    let mut nested = root.to_path_buf();
    for x in named {
        nested.push(file_name_part(x, false));
    }
    match kind {
        ExportKind::Mbox if single => root.to_path_buf(),
        ExportKind::Mbox => {
            let mut s = nested.into_os_string();
            s.push(".mbox");
            PathBuf::from(s)
        }
        ExportKind::Maildir if parts.is_empty() => root.to_path_buf(),
        ExportKind::Maildir => {
            let levels: Vec<String> = parts.iter().map(|p| file_name_part(p, true)).collect();
            root.join(format!(".{}", levels.join(".")))
        }
        ExportKind::Eml => nested,
    }
}

fn create_maildir(dir: &Path, sub: bool) -> Result<()> {
    for d in ["cur", "new", "tmp"] {
        let p = dir.join(d);
        fs::create_dir_all(&p).at("creating", &p)?;
    }
    if sub {
        let p = dir.join("maildirfolder");
        File::create(&p).at("creating", &p)?;
    }
    Ok(())
}

/// Write the plan's messages to files under `path`.
pub fn export(
    src: &mut Source,
    plan: &Plan,
    kind: ExportKind,
    path: &Path,
    progress: &mut dyn Progress,
) -> Result<Summary> {
    let mut sum = Summary::for_plan(plan);
    let single = plan.folders.len() == 1;
    // Per folder: its path, or None (reported).
    let mut dest: Vec<Option<PathBuf>> = Vec::new();
    for f in &plan.folders {
        let p = folder_path(kind, path, &f.parts, single);
        match kind {
            ExportKind::Mbox => {
                if let Some(dir) = p.parent() {
                    fs::create_dir_all(dir).at("creating", dir)?;
                }
                File::create(&p).at("creating", &p)?;
            }
            ExportKind::Maildir => create_maildir(&p, !f.parts.is_empty())?,
            ExportKind::Eml => fs::create_dir_all(&p).at("creating", &p)?,
        }
        sum.created += 1;
        dest.push(Some(p));
    }
    if kind == ExportKind::Maildir && !plan.folders.iter().any(|f| f.parts.is_empty()) {
        create_maildir(path, false)?;
    }
    let mut jobs: Vec<(usize, &RecordState)> = Vec::new();
    for (i, f) in plan.folders.iter().enumerate() {
        if dest[i].is_some() {
            jobs.extend(f.records.iter().map(|r| (i, r)));
        }
    }
    progress.total(jobs.len() as u64);
    let guids: Vec<Guid> = jobs.iter().map(|(_, r)| r.guid).collect();
    let mut mboxes: HashMap<usize, BufWriter<File>> = HashMap::new();
    let mut io_err: Option<Error> = None;
    src.read_batch(&guids, |j, bytes| {
        progress.tick();
        let Some(&(fi, rec)) = jobs.get(j) else {
            return;
        };
        let (Some(Some(dir)), Some(folder)) = (dest.get(fi), plan.folders.get(fi)) else {
            return;
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                sum.fail(&folder.name, Some(rec), e.to_string());
                return;
            }
        };
        let r = write_one(kind, dir, fi, rec, &bytes, &mut mboxes);
        match r {
            Ok(()) => sum.appended += 1,
            Err(e) => {
                sum.fail(&folder.name, Some(rec), e.to_string());
                if io_err.is_none() {
                    io_err = Some(e);
                }
            }
        }
    })?;
    for (_, mut w) in mboxes {
        w.flush().map_err(|e| Error::io("writing", path, e))?;
    }
    if kind != ExportKind::Maildir && !plan.sieve.is_empty() {
        write_sieve(plan, path, single && kind == ExportKind::Mbox)?;
    }
    Ok(sum)
}

fn write_one(
    kind: ExportKind,
    dir: &Path,
    fi: usize,
    rec: &RecordState,
    bytes: &[u8],
    mboxes: &mut HashMap<usize, BufWriter<File>>,
) -> Result<()> {
    match kind {
        ExportKind::Mbox => {
            let w = match mboxes.entry(fi) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let f = OpenOptions::new()
                        .append(true)
                        .open(dir)
                        .at("opening", dir)?;
                    v.insert(BufWriter::new(f))
                }
            };
            w.write_all(from_line(rec.internaldate).as_bytes())
                .and_then(|()| w.write_all(&mboxrd_body(bytes)))
                .and_then(|()| w.write_all(b"\n"))
                .at("writing", dir)?;
            Ok(())
        }
        ExportKind::Maildir => {
            let name = format!(
                "{}.{}.cyrvault:2,{}",
                rec.internaldate,
                rec.guid.to_hex(),
                maildir_flags(rec)
            );
            let p = dir.join("cur").join(&name);
            let tmp = dir
                .join("tmp")
                .join(format!("{}.{}", rec.internaldate, rec.guid.to_hex()));
            fs::write(&tmp, bytes).at("writing", &tmp)?;
            let t = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(rec.internaldate).unwrap_or(0));
            File::options()
                .write(true)
                .open(&tmp)
                .and_then(|f| f.set_modified(t))
                .at("setting the time of", &tmp)?;
            Ok(fs::rename(&tmp, &p).at("moving into cur/", &p)?)
        }
        ExportKind::Eml => {
            let p = dir.join(format!("{}.eml", rec.uid));
            Ok(fs::write(&p, bytes).at("writing", &p)?)
        }
    }
}

/// Sieve scripts beside the export: `<base>/sieve/<name>` and `sieve/ACTIVE`.
fn write_sieve(plan: &Plan, path: &Path, beside_file: bool) -> Result<()> {
    let base = if beside_file {
        let mut s = path.as_os_str().to_owned();
        s.push(".sieve");
        PathBuf::from(s)
    } else {
        path.join("sieve")
    };
    fs::create_dir_all(&base).at("creating", &base)?;
    for (name, bytes) in &plan.sieve {
        let p = base.join(file_name_part(name, false));
        fs::write(&p, bytes).at("writing", &p)?;
    }
    if let Some(a) = &plan.active_sieve {
        let p = base.join("ACTIVE");
        fs::write(&p, format!("{a}\n")).at("writing", &p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(flags: u32, kw: &[&str]) -> RecordState {
        RecordState {
            uid: 1,
            guid: Guid([0; 20]),
            system_flags: flags,
            keywords: kw.iter().map(|s| s.to_string()).collect(),
            internaldate: 0,
            size: 0,
            modseq: 0,
            last_updated: 0,
            savedate: 0,
        }
    }

    #[test]
    fn maildir_flags_sorted() {
        assert_eq!(maildir_flags(&rec(31, &["$Forwarded"])), "DFPRST");
        assert_eq!(maildir_flags(&rec(16 | 2, &["Work"])), "FS");
        assert_eq!(maildir_flags(&rec(0, &[])), "");
    }

    #[test]
    fn mboxrd_quotes_from_lines() {
        let m = b"Subject: x\r\n\r\nFrom here\r\n>From there\r\nnot From\r\n";
        assert_eq!(
            mboxrd_body(m),
            b"Subject: x\r\n\r\n>From here\r\n>>From there\r\nnot From\r\n".to_vec()
        );
        assert_eq!(mboxrd_body(b"x"), b"x\n".to_vec());
    }

    #[test]
    fn from_lines() {
        assert_eq!(
            from_line(0),
            "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n"
        );
        // 2026-11-28 13:05:09 UTC, a Saturday
        assert_eq!(
            from_line(1_795_871_109),
            "From MAILER-DAEMON Sat Nov 28 13:05:09 2026\n"
        );
    }

    #[test]
    fn paths_stay_inside() {
        let r = Path::new("/x");
        let p = |s: &str| crate::restore::name_parts(s);
        let fp = |k, n: &str| folder_path(k, r, &p(n), false);
        assert_eq!(
            fp(ExportKind::Maildir, "INBOX.Archive.2023"),
            PathBuf::from("/x/.Archive.2023")
        );
        assert_eq!(fp(ExportKind::Maildir, "INBOX"), PathBuf::from("/x"));
        assert_eq!(
            fp(ExportKind::Mbox, "INBOX.Archive.2023"),
            PathBuf::from("/x/Archive/2023.mbox")
        );
        assert_eq!(fp(ExportKind::Eml, "INBOX"), PathBuf::from("/x/INBOX"));
        // Names Cyrus accepts (`INBOX/..`, `INBOX/dots/../up`) are escaped, never
        // refused, and never leave the target directory.
        assert_eq!(fp(ExportKind::Eml, "INBOX/.."), PathBuf::from("/x/%2E."));
        assert_eq!(
            fp(ExportKind::Eml, "INBOX/dots/../up"),
            PathBuf::from("/x/dots/%2E./up")
        );
        assert_eq!(
            fp(ExportKind::Mbox, "INBOX/.."),
            PathBuf::from("/x/%2E..mbox")
        );
        assert_eq!(
            fp(ExportKind::Maildir, "INBOX/dots/../up"),
            PathBuf::from("/x/.dots.%2E%2E.up")
        );
        assert_eq!(
            fp(ExportKind::Maildir, "INBOX/a.b"),
            PathBuf::from("/x/.a%2Eb")
        );
        assert_eq!(
            fp(ExportKind::Eml, "INBOX/100%/a\u{1}b"),
            PathBuf::from("/x/100%25/a%01b")
        );
        for n in ["INBOX/..", "INBOX/../..", "INBOX/dots/../up", "INBOX/./x"] {
            for k in [ExportKind::Eml, ExportKind::Mbox, ExportKind::Maildir] {
                let got = fp(k, n);
                assert!(
                    got.components().all(|c| matches!(
                        c,
                        std::path::Component::RootDir | std::path::Component::Normal(_)
                    )),
                    "{n}: {}",
                    got.display()
                );
                assert!(got.starts_with(r));
            }
        }
    }
}
