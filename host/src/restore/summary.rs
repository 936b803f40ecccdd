//! What a restore reports: the summary (`--json`), its failures and warnings, the
//! dry-run steps, and the progress callback.
#![forbid(unsafe_code)]

use serde::Serialize;

use super::Plan;
use crate::model::RecordState;

/// The outcome of a restore: the `--json` summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The run restored from.
    pub run: u64,
    /// Folders created (or files/directories written for exports).
    pub created: u64,
    /// Messages appended (or written).
    pub appended: u64,
    /// Bytes of the messages restored (sent to the target).
    pub bytes: u64,
    /// Messages already in the target (same GUID), not appended again.
    pub skipped: u64,
    /// Messages or steps that failed; see `failures`.
    pub failed: u64,
    /// What failed and why.
    pub failures: Vec<Failure>,
    /// Subscriptions made, sieve scripts put.
    pub subscribed: u64,
    /// Sieve scripts uploaded.
    pub sieve_scripts: u64,
    /// Quota roots set.
    pub quota_roots: u64,
    /// Other users' folders whose `\Seen` state for this user was restored.
    pub foreign_seen: u64,
    /// Things not restored that are not failures (e.g. a subscription to a folder that
    /// does not exist, which the target refuses over IMAP): listed, exit status 0.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// With `--dry-run`: every step that would be taken, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
}

/// Something left out that does not make the restore fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The folder (or item) it is about, as the target names it.
    pub folder: String,
    /// Why.
    pub reason: String,
}

/// One failure, with enough to find the message again.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Target folder (or file), as the target names it.
    pub folder: String,
    /// The message, if the failure is about one.
    pub guid: Option<String>,
    /// Its UID in the backed-up folder.
    pub uid: Option<u32>,
    /// What went wrong.
    pub reason: String,
}

/// A step of a restore, as `--dry-run` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Create a folder (then set its backed-up ACL).
    Create { folder: String },
    /// Append a message.
    Append {
        folder: String,
        guid: String,
        uid: u32,
    },
    /// A message the target already holds.
    Skip {
        folder: String,
        guid: String,
        uid: u32,
    },
    /// Subscribe the user to a folder.
    Subscribe { folder: String },
    /// Upload a sieve script (and activate it).
    Sieve { script: String, active: bool },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Create { folder } => write!(f, "create {folder}"),
            Action::Append { folder, guid, uid } => write!(f, "append {folder} {guid} uid {uid}"),
            Action::Skip { folder, guid, uid } => {
                write!(f, "skip   {folder} {guid} uid {uid} (already there)")
            }
            Action::Subscribe { folder } => write!(f, "subscribe {folder}"),
            Action::Sieve { script, active } => {
                write!(
                    f,
                    "sieve  {script}{}",
                    if *active { " (active)" } else { "" }
                )
            }
        }
    }
}

impl Summary {
    /// The summary a restore of `plan` starts from: its run, and the problems found
    /// while planning already counted as failures.
    pub(crate) fn for_plan(plan: &Plan) -> Self {
        Summary {
            run: plan.run,
            failed: plan.problems.len() as u64,
            failures: plan.problems.clone(),
            ..Summary::default()
        }
    }

    /// Record a warning (not a failure).
    pub fn warn(&mut self, folder: &str, reason: String) {
        self.warnings.push(Warning {
            folder: folder.to_string(),
            reason,
        });
    }

    /// Record a failure.
    pub fn fail(&mut self, folder: &str, rec: Option<&RecordState>, reason: String) {
        self.failed += 1;
        self.failures.push(Failure {
            folder: folder.to_string(),
            guid: rec.map(|r| r.guid.to_hex()),
            uid: rec.map(|r| r.uid),
            reason,
        });
    }
}

/// Progress reports for a terminal: total messages once known, then one tick each.
pub trait Progress: Send {
    /// How many messages the restore will handle.
    fn total(&mut self, n: u64);
    /// One message done (appended, skipped or failed).
    fn tick(&mut self);
}

/// No progress output.
pub struct NoProgress;

impl Progress for NoProgress {
    fn total(&mut self, _: u64) {}
    fn tick(&mut self) {}
}
