//! Cyrus's shutdown file: while `{configdirectory}/msg/shutdown.<service>` or
//! `{configdirectory}/msg/shutdown` exists, Cyrus services refuse work (the admin's
//! "maintenance" switch; imapd says the file's first line in its BYE). Every Cyrus
//! service looks before each command (`shutdown_file()` in Cyrus's imap/global.c,
//! called from `cmdloop` in imap/backupcyrusd.c); so does cyrvaultd: the session
//! answers `NO shutdown: <first line>` and ends, and the process exits when the
//! session is over.
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Path, PathBuf};

/// The two files to look for, per-service first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownFile {
    service: PathBuf,
    system: PathBuf,
}

impl ShutdownFile {
    /// The files of `service` under `config_dir`.
    pub fn new(config_dir: &Path, service: &str) -> Self {
        let msg = config_dir.join("msg");
        ShutdownFile {
            service: msg.join(format!("shutdown.{service}")),
            system: msg.join("shutdown"),
        }
    }

    /// `Some(first line)` when a shutdown file exists (the line may be empty). One
    /// failed `open` per call when there is none, as upstream.
    pub fn check(&self) -> Option<String> {
        let file = std::fs::File::open(&self.service)
            .or_else(|_| std::fs::File::open(&self.system))
            .ok()?;
        let mut head = Vec::with_capacity(256);
        let _ = file.take(1024).read_to_end(&mut head);
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Some(
            String::from_utf8_lossy(line)
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_service_file_first_then_the_system_one() {
        let dir = std::env::temp_dir().join(format!("cyrvault-shutdown-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("msg")).unwrap();
        let s = ShutdownFile::new(&dir, "cyrvaultd");
        assert_eq!(s.check(), None);
        std::fs::write(
            dir.join("msg/shutdown"),
            b"down for upgrade\r\nsecond line\n",
        )
        .unwrap();
        assert_eq!(s.check().as_deref(), Some("down for upgrade"));
        std::fs::write(dir.join("msg/shutdown.cyrvaultd"), b"backups paused\x07").unwrap();
        assert_eq!(s.check().as_deref(), Some("backups paused?"));
        std::fs::write(dir.join("msg/shutdown.cyrvaultd"), b"").unwrap();
        assert_eq!(s.check().as_deref(), Some(""));
        assert_eq!(
            ShutdownFile::new(&dir, "other").check().as_deref(),
            Some("down for upgrade")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
