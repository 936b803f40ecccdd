//! Folders a run did not back up, and why: the one place any part of a run (the
//! folder loop, the listing of what the server holds, a future check) records that
//! a folder is missing from this run's new state.
//!
//! The rule the run keeps (doc/backup.md, "What a green run promises"): a folder's
//! new state is committed only together with every message it references; a folder
//! that cannot be is pushed here with [`super::UserReport::fail_folder`], its previous
//! state (if the archive has one) is carried forward by the catalog, and the run's
//! exit status is non-zero. A run with no failure and no spool damage is "green".
#![forbid(unsafe_code)]

use std::fmt;

use serde::{Deserialize, Serialize};

use cyrvault::error::{EX_DATAERR, EX_TEMPFAIL, ErrorKind};

/// What a folder failure means for the admin, and the exit status it gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The folder changed while it was read (renamed, deleted or replaced between the
    /// listing and the reading, a message file purged between `FMETA` and `FDATA`,
    /// the server busy): the next run tries again. Exit status 75 (`EX_TEMPFAIL`).
    Temporary,
    /// The server's copy is damaged (a message file that does not hash to the GUID
    /// Cyrus's index gives it, metadata that does not parse, a record without a GUID):
    /// it stays failed until an admin repairs the spool (`reconstruct`). Exit 65.
    Damaged,
    /// The server will not serve the folder (it refuses its name or its kind): it stays
    /// failed until cyrvault or the server's configuration is changed. Exit 65.
    Refused,
}

impl FailureClass {
    /// The error class (temporary or bad data).
    pub fn kind(self) -> ErrorKind {
        match self {
            FailureClass::Temporary => ErrorKind::Temporary,
            FailureClass::Damaged | FailureClass::Refused => ErrorKind::Data,
        }
    }

    /// The sysexits code: 75 for temporary, 65 otherwise.
    pub fn exit_code(self) -> i32 {
        match self.kind() {
            ErrorKind::Temporary => EX_TEMPFAIL,
            _ => EX_DATAERR,
        }
    }

    /// `temporary`, `damaged`, `refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Temporary => "temporary",
            FailureClass::Damaged => "damaged",
            FailureClass::Refused => "refused",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One folder a run did not back up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderFailure {
    /// The user the run was for.
    pub user: String,
    /// The folder's name as the server listed it (relative to the user: `INBOX`,
    /// `INBOX/Work`, ...; for a folder outside the user's tree, its full name).
    pub folder: String,
    /// The folder's UniqueID, when known.
    pub uniqueid: Option<String>,
    pub class: FailureClass,
    /// What went wrong, for a human (names the request, UIDs, hashes).
    pub reason: String,
    /// Whether the run's state of the folder is its previous one, carried forward
    /// (`false`: the archive has never held this folder). Set when the run commits.
    pub carried_forward: bool,
}

impl FolderFailure {
    /// A failure of `folder` (with its UniqueID when known), not yet committed.
    pub fn new(
        user: &str,
        folder: &str,
        uniqueid: Option<&str>,
        class: FailureClass,
        reason: impl Into<String>,
    ) -> FolderFailure {
        FolderFailure {
            user: user.to_string(),
            folder: folder.to_string(),
            uniqueid: uniqueid.map(str::to_string),
            class,
            reason: reason.into(),
            carried_forward: false,
        }
    }
}

impl fmt::Display for FolderFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "user {} folder {}: FAILED ({}): {}",
            self.user, self.folder, self.class, self.reason
        )?;
        if self.carried_forward {
            f.write_str("; its previous backup is carried forward")
        } else {
            f.write_str("; not in the archive yet")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_to_exit_codes_and_json() {
        assert_eq!(FailureClass::Temporary.exit_code(), 75);
        assert_eq!(FailureClass::Damaged.exit_code(), 65);
        assert_eq!(FailureClass::Refused.exit_code(), 65);
        let f = FolderFailure::new(
            "bob",
            "INBOX/Race",
            Some("u1"),
            FailureClass::Temporary,
            "FDATA answered NO no such folder INBOX/Race",
        );
        let j = serde_json::to_value(&f).unwrap();
        assert_eq!(j["class"], "temporary");
        assert_eq!(j["folder"], "INBOX/Race");
        assert_eq!(
            f.to_string(),
            "user bob folder INBOX/Race: FAILED (temporary): FDATA answered NO no such \
             folder INBOX/Race; not in the archive yet"
        );
    }
}
