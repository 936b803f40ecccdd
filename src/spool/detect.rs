//! Which Cyrus release this spool belongs to, found without the admin's help, and
//! the conventions that follow (`cyrus::version`).
//!
//! In order:
//!
//! 1. **The master that started us.** Cyrus's `master` forks and execs each
//!    service, so our parent process is the master of the very installation whose
//!    files we read. If the parent runs a program named `master` (`cyrmaster`,
//!    `cyrus-master` on some distributions; `/proc/<ppid>/comm`), we run the
//!    program it was started as (`/proc/<ppid>/cmdline`) with `-V`
//!    (it prints `cyrus-imapd <version>` and exits before touching anything;
//!    `master/master.c`), with our own environment, which is master's: a private
//!    installation's `LD_LIBRARY_PATH` comes along. The release decides
//!    ([`conventions_for`]).
//! 2. **The files.** Otherwise (stdio mode, inetd, tests, or `-V` failed), the
//!    record kinds of `mailboxes.db` prove a lower bound: `J` records or fields
//!    mean 3.13, `UG` records 3.12 ([`conventions_from_marker`]).
//! 3. **Nothing known.** Both user namespace lock names are taken
//!    ([`UserLockNaming::Both`]), which is right for every supported release.
//!
//! A release newer than the newest we know is read with the newest conventions
//! and logged as a warning at start; its files are still checked by every parser
//! (an index minor version above 20, for one, is refused by name).
#![forbid(unsafe_code)]

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cyrus::config::ImapdConf;
use crate::cyrus::mboxlist::KindCounts;
use crate::cyrus::version::{
    Conventions, CyrusVersion, Support, UserLockNaming, conventions_for, conventions_from_marker,
    newest,
};
use crate::lock::Locker;

use super::error::Result;

/// Program names Cyrus's master goes by.
const MASTER_NAMES: &[&str] = &["master", "cyrmaster", "cyrus-master"];
/// How long `master -V` may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the answer came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Source {
    /// `<exe> -V` of the master that started us.
    Master(PathBuf),
    /// `mailboxes.db`'s record kinds.
    MailboxesDb,
    /// Nothing said anything.
    Unknown,
}

/// What is known about the Cyrus release, and the conventions in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detection {
    /// The release, when master told us.
    pub version: Option<CyrusVersion>,
    /// Its place against what we know (None without a release).
    pub support: Option<Support>,
    pub source: Source,
    /// The oldest series that writes what mailboxes.db holds, when it was read.
    pub marker: Option<(u32, u32)>,
    pub conventions: Conventions,
    /// Why master was not asked, or what asking it gave.
    pub note: Option<String>,
}

impl Detection {
    /// A known release, as if master had said it (tests, and callers that know).
    pub fn known(version: CyrusVersion) -> Detection {
        let (conventions, support) = conventions_for(&version);
        Detection {
            version: Some(version),
            support: Some(support),
            source: Source::Unknown,
            marker: None,
            conventions,
            note: Some("given by the caller".into()),
        }
    }

    /// Whether this deserves a warning at start (not a supported release).
    pub fn is_warning(&self) -> bool {
        !matches!(self.support, Some(Support::Supported))
    }

    /// Log the one start line: info for a supported release, else a warning.
    pub fn log(&self) {
        if self.is_warning() {
            log::warn!(target: "cyrvault::service", "{self}");
        } else {
            log::info!(target: "cyrvault::service", "{self}");
        }
    }
}

impl fmt::Display for Detection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.version, &self.source) {
            (Some(v), Source::Master(exe)) => write!(f, "cyrus {v} (from {} -V)", exe.display())?,
            (Some(v), _) => write!(f, "cyrus {v}")?,
            (None, _) => f.write_str("cyrus release unknown")?,
        }
        if let Some((a, b)) = self.marker {
            write!(f, "; mailboxes.db has records of cyrus {a}.{b} or newer")?;
        }
        let n = newest();
        match self.support {
            Some(Support::Newer) => write!(
                f,
                "; newer than the newest release cyrvault knows ({}.{}): its conventions are used, and files of a layout cyrvault does not know are refused",
                n.major, n.minor
            )?,
            Some(Support::Older) => f.write_str(
                "; older than 3.6, which cyrvault does not support (its mailboxes.db layout is refused)",
            )?,
            Some(Support::Development) => f.write_str("; a development series")?,
            _ => {}
        }
        let how = match self.conventions.user_lock {
            UserLockNaming::Both => {
                " (release unknown: both names, right for every supported release)"
            }
            _ => "",
        };
        write!(
            f,
            "; user namespace lock {}{how}",
            self.conventions.user_lock.example()
        )?;
        if let Some(n) = &self.note {
            write!(f, "; {n}")?;
        }
        Ok(())
    }
}

/// Find out which Cyrus this is (see the module documentation).
pub fn detect(conf: &ImapdConf, locker: &Locker) -> Detection {
    let note = match parent_master() {
        Ok(Some(exe)) => match ask_master(&exe) {
            Ok(version) => {
                let (conventions, support) = conventions_for(&version);
                return Detection {
                    version: Some(version),
                    support: Some(support),
                    source: Source::Master(exe),
                    marker: None,
                    conventions,
                    note: None,
                };
            }
            Err(e) => Some(format!("asking {} -V: {e}", exe.display())),
        },
        Ok(None) => Some("not started by a Cyrus master".to_string()),
        Err(e) => Some(format!("looking at our parent process: {e}")),
    };
    match mailboxes_db_marker(conf, locker) {
        Ok(marker) => Detection {
            version: None,
            support: None,
            source: Source::MailboxesDb,
            marker,
            conventions: conventions_from_marker(marker),
            note,
        },
        Err(e) => Detection {
            version: None,
            support: None,
            source: Source::Unknown,
            marker: None,
            conventions: Conventions::UNKNOWN,
            note: Some(format!(
                "{}; reading mailboxes.db: {e}",
                note.unwrap_or_default()
            )),
        },
    }
}

/// The parent's program, if the parent is a Cyrus master. master drops root for
/// the cyrus user, which makes it non-dumpable: its `/proc/<pid>/exe` link is
/// closed to us, but `comm` (the name it was executed as) and `cmdline` are not.
/// A relative `argv[0]` is looked up in `PATH` (ours is master's).
fn parent_master() -> Result<Option<PathBuf>, String> {
    let ppid = nix::unistd::getppid();
    let read = |what: &str| {
        let p = PathBuf::from(format!("/proc/{ppid}/{what}"));
        std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let comm = String::from_utf8_lossy(&read("comm")?).trim().to_string();
    if !MASTER_NAMES.contains(&comm.as_str()) {
        return Ok(None);
    }
    let cmdline = read("cmdline")?;
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let argv0 = PathBuf::from(String::from_utf8_lossy(argv0).into_owned());
    if argv0.components().count() > 1 {
        return Ok(Some(argv0));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(&argv0))
        .find(|p| p.is_file())
        .map(Some)
        .ok_or_else(|| format!("master was started as {argv0:?}, which is not in PATH"))
}

/// Run `<exe> -V` (bounded) and parse what it prints.
pub fn ask_master(exe: &Path) -> Result<CyrusVersion, String> {
    let mut child = Command::new(exe)
        .arg("-V")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + ASK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {ASK_TIMEOUT:?}"));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out).map_err(|e| e.to_string())?;
    }
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    CyrusVersion::parse(&out).ok_or_else(|| format!("no version in {:?}", out.trim()))
}

/// What mailboxes.db's record kinds say (read under its shared lock). A `J`
/// or `UG` key is found by one lookup each; only without them are the values
/// walked for a `J` field, in place, so memory does not grow with the server.
fn mailboxes_db_marker(conf: &ImapdConf, locker: &Locker) -> Result<Option<(u32, u32)>> {
    let path = conf.mboxlist_db_path();
    let found = super::db::with_db(locker, &path, &Default::default(), |db| {
        let mut kinds = KindCounts::default();
        let mut any = |prefix: &[u8]| -> Result<bool> {
            let mut first = None;
            db.walk_from(prefix, |k, _| {
                first = Some(k.starts_with(prefix));
                false
            })?;
            Ok(first == Some(true))
        };
        kinds.jmap_ids = u64::from(any(b"J")?);
        kinds.user_groups = u64::from(any(b"UG")?);
        if kinds.newest_marker().is_none() {
            // A J field in any value marks 3.13 too, when no J record survived.
            db.walk_from(b"", |k, v| {
                let field = matches!(k.first(), Some(b'N' | b'I'))
                    && crate::cyrus::dlist::parse_dlist(v).is_ok_and(|d| d.get("J").is_some());
                if field {
                    kinds.jmapid_fields += 1;
                }
                !field
            })?;
        }
        Ok(kinds.newest_marker())
    })?;
    Ok(found.flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_line_says_what_is_known() {
        let d = Detection::known(CyrusVersion::parse("3.10.1-3~bpo12+1").unwrap());
        assert!(!d.is_warning());
        assert_eq!(
            d.to_string(),
            "cyrus 3.10.1-3~bpo12+1; user namespace lock *U*bob; given by the caller"
        );
        let d = Detection::known(CyrusVersion::parse("3.14.0").unwrap());
        assert!(d.is_warning());
        assert!(
            d.to_string()
                .contains("newer than the newest release cyrvault knows (3.13)")
        );
        assert!(d.to_string().contains("*U*user.bob"));
        let d = Detection {
            version: None,
            support: None,
            source: Source::MailboxesDb,
            marker: None,
            conventions: Conventions::UNKNOWN,
            note: Some("not started by a Cyrus master".into()),
        };
        assert!(d.is_warning());
        assert!(d.to_string().contains("both names"), "{d}");
    }

    #[test]
    fn a_missing_master_is_an_error_not_a_hang() {
        assert!(ask_master(Path::new("/nonexistent/master")).is_err());
        // A program that prints no version.
        let e = ask_master(Path::new("/bin/true")).unwrap_err();
        assert!(e.contains("no version"), "{e}");
    }
}
