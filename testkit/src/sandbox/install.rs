//! Which Cyrus installation a sandbox runs: the system's (Debian 12's 3.6, in
//! `/usr/lib/cyrus/bin`) or a private one unpacked beside it (Cyrus 3.10 from
//! bookworm-backports, unpacked by `scripts/setup.sh` into `/opt/cyrus-3.10`,
//! run with `LD_LIBRARY_PATH` at its own libraries). Every Cyrus program a sandbox
//! starts (master, the services it forks, the tools) comes from the same one.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{CYRUS_BIN, other};
use cyrvault::cyrus::version::CyrusVersion;
use cyrvault_host::error::Result;

/// Where `scripts/setup.sh` unpacks Cyrus 3.10 (override: `CYRVAULT_CYRUS310_DIR`).
pub const CYRUS310_DIR: &str = "/opt/cyrus-3.10";

/// One Cyrus installation: its programs, its libraries, its release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CyrusInstall {
    /// The directory holding `master`, `imapd`, `lmtpd` and the tools.
    pub bin_dir: PathBuf,
    /// Its shared libraries, put first in `LD_LIBRARY_PATH` (None: the system's).
    pub lib_dir: Option<PathBuf>,
    /// The release its `master -V` reports.
    pub version: CyrusVersion,
}

impl CyrusInstall {
    /// The system's Cyrus (`/usr/lib/cyrus/bin`).
    pub fn system() -> Result<CyrusInstall> {
        super::process::ensure_cyrus_installed()?;
        Self::at(PathBuf::from(CYRUS_BIN), None)
    }

    /// Cyrus 3.10 unpacked by `scripts/setup.sh` (an error naming the script when
    /// it is missing: tests that need it fail, they never skip).
    pub fn cyrus310() -> Result<CyrusInstall> {
        let root = std::env::var_os("CYRVAULT_CYRUS310_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CYRUS310_DIR));
        let bin = root.join("usr/lib/cyrus/bin");
        if !bin.join("master").exists() {
            return Err(other(format!(
                "Cyrus 3.10 is not unpacked at {} (run scripts/setup.sh as root)",
                root.display()
            )));
        }
        let install = Self::at(bin, Some(root.join("usr/lib/x86_64-linux-gnu")))?;
        if install.version.series() != (3, 10) {
            return Err(other(format!(
                "{} holds Cyrus {}, not 3.10",
                root.display(),
                install.version
            )));
        }
        Ok(install)
    }

    /// The installation named by a release series, `"3.6"` or `"3.10"`.
    pub fn by_series(series: &str) -> Result<CyrusInstall> {
        match series {
            "3.6" => Self::system(),
            "3.10" => Self::cyrus310(),
            other_series => Err(other(format!(
                "no Cyrus {other_series} installation is known (3.6: the system's, 3.10: {CYRUS310_DIR})"
            ))),
        }
    }

    /// An installation in `bin_dir`, asking its master for the release.
    pub fn at(bin_dir: PathBuf, lib_dir: Option<PathBuf>) -> Result<CyrusInstall> {
        let master = bin_dir.join("master");
        let mut cmd = Command::new(&master);
        if let Some(lp) = library_path(lib_dir.as_deref()) {
            cmd.env("LD_LIBRARY_PATH", lp);
        }
        let out = cmd
            .arg("-V")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| other(format!("running {} -V: {e}", master.display())))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = CyrusVersion::parse(&text).ok_or_else(|| {
            other(format!(
                "{} -V printed no version ({}): {}{}",
                master.display(),
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })?;
        Ok(CyrusInstall {
            bin_dir,
            lib_dir,
            version,
        })
    }

    /// The full path of one of its programs.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// `LD_LIBRARY_PATH` for its programs (None: leave the environment alone).
    pub fn library_path(&self) -> Option<OsString> {
        library_path(self.lib_dir.as_deref())
    }

    /// A `Command` for `program` with this installation's library path.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        self.set_env(&mut c);
        c
    }

    /// Put this installation's library path into `c`'s environment.
    pub fn set_env(&self, c: &mut Command) {
        if let Some(lp) = self.library_path() {
            c.env("LD_LIBRARY_PATH", lp);
        }
    }

    /// Whether this is the system's installation.
    pub fn is_system(&self) -> bool {
        self.lib_dir.is_none() && self.bin_dir == Path::new(CYRUS_BIN)
    }
}

/// `lib` first, then whatever `LD_LIBRARY_PATH` already holds.
fn library_path(lib: Option<&Path>) -> Option<OsString> {
    let mut v = lib?.as_os_str().to_os_string();
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|o| !o.is_empty()) {
        v.push(":");
        v.push(old);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_path_comes_first() {
        let i = CyrusInstall {
            bin_dir: "/opt/c/bin".into(),
            lib_dir: Some("/opt/c/lib".into()),
            version: CyrusVersion::parse("3.10.1").unwrap(),
        };
        let lp = i.library_path().unwrap();
        assert!(lp.to_string_lossy().starts_with("/opt/c/lib"));
        assert_eq!(i.program("imapd"), PathBuf::from("/opt/c/bin/imapd"));
        assert!(!i.is_system());
    }
}
