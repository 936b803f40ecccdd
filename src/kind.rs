//! The classes every layer's error falls into ([`ErrorKind`]), and what each class
//! means outside: its sysexits code (the exit status of `cyrvaultd`, the static
//! library's entry points and the host's commands), its name in a cyrvaultd
//! `NO internal error [NAME]` answer and its name in JSON and the fleet's database.
//! Every layer's error (`spool::SpoolError`, `secret::SecretError`, the service's
//! `Error`, the host's) maps itself to one of these with its own `kind()`, so the
//! classes stay the same whichever layer a failure is converted at. Depends on
//! nothing inside the crate.
#![forbid(unsafe_code)]

use std::fmt;

/// Coarse classes of errors, for exit codes and retry decisions. In JSON and in
/// the fleet's database a class is its [`ErrorKind::name`] (`temporary`, `config`,
/// `permission`, `data`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Io,
    Data,
    Config,
    Temporary,
    NotFound,
    Usage,
    Software,
    /// Authentication or access refused.
    Permission,
}

impl ErrorKind {
    /// The sysexits name a service puts in a permanent `NO internal error [NAME]`.
    pub fn wire_name(self) -> &'static str {
        match self {
            ErrorKind::Io => "IOERR",
            ErrorKind::Data => "DATAERR",
            ErrorKind::Config => "CONFIG",
            ErrorKind::Temporary => "TEMPFAIL",
            ErrorKind::NotFound => "NOINPUT",
            ErrorKind::Usage => "USAGE",
            ErrorKind::Software => "SOFTWARE",
            ErrorKind::Permission => "NOPERM",
        }
    }

    /// The sysexits code of this class.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Io => EX_IOERR,
            ErrorKind::Data => EX_DATAERR,
            ErrorKind::Config => EX_CONFIG,
            ErrorKind::Temporary => EX_TEMPFAIL,
            ErrorKind::NotFound => EX_NOINPUT,
            ErrorKind::Usage => EX_USAGE,
            ErrorKind::Software => EX_SOFTWARE,
            ErrorKind::Permission => EX_NOPERM,
        }
    }

    /// The class's name in JSON and in the fleet's database (its serde name).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::Data => "data",
            ErrorKind::Config => "config",
            ErrorKind::Temporary => "temporary",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Usage => "usage",
            ErrorKind::Software => "software",
            ErrorKind::Permission => "permission",
        }
    }

    /// The class an [`ErrorKind::name`] names.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ALL_KINDS.into_iter().find(|k| k.name() == name)
    }

    /// How much the admin must do about it, for "the most severe class seen" (a run
    /// of many users exits with it): a wrong configuration (78) over refused
    /// credentials (77) over damaged or refused data (65) over the other permanent
    /// classes, and a temporary failure (75, the next run retries) least.
    pub fn severity(self) -> u8 {
        match self {
            ErrorKind::Config => 7,
            ErrorKind::Permission => 6,
            ErrorKind::Data => 5,
            ErrorKind::Io => 4,
            ErrorKind::Software => 3,
            ErrorKind::NotFound => 2,
            ErrorKind::Usage => 1,
            ErrorKind::Temporary => 0,
        }
    }

    /// The more severe of two classes (see [`ErrorKind::severity`]).
    pub fn worst(self, other: ErrorKind) -> ErrorKind {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// The class of a sysexits code this crate gives (None for 0 or a foreign code).
    pub fn from_exit_code(code: i32) -> Option<ErrorKind> {
        ALL_KINDS.into_iter().find(|k| k.exit_code() == code)
    }

    /// The kind of a [`ErrorKind::wire_name`].
    pub fn from_wire_name(name: &str) -> Option<ErrorKind> {
        ALL_KINDS.into_iter().find(|k| k.wire_name() == name)
    }
}

const ALL_KINDS: [ErrorKind; 8] = [
    ErrorKind::Io,
    ErrorKind::Data,
    ErrorKind::Config,
    ErrorKind::Temporary,
    ErrorKind::NotFound,
    ErrorKind::Usage,
    ErrorKind::Software,
    ErrorKind::Permission,
];

/// sysexits.h codes, the ones Cyrus uses too.
pub const EX_USAGE: i32 = 64;
pub const EX_DATAERR: i32 = 65;
pub const EX_NOINPUT: i32 = 66;
pub const EX_SOFTWARE: i32 = 70;
pub const EX_NOPERM: i32 = 77;
pub const EX_OSERR: i32 = 71;
pub const EX_IOERR: i32 = 74;
pub const EX_TEMPFAIL: i32 = 75;
pub const EX_CONFIG: i32 = 78;

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_severe_class_wins() {
        use ErrorKind::*;
        assert_eq!(Temporary.worst(Data), Data);
        assert_eq!(Data.worst(Permission), Permission);
        assert_eq!(Config.worst(Permission), Config);
        assert_eq!(Temporary.worst(Temporary), Temporary);
        assert_eq!(NotFound.worst(Temporary), NotFound);
    }

    #[test]
    fn wire_names_round_trip() {
        for k in [
            ErrorKind::Data,
            ErrorKind::Permission,
            ErrorKind::Io,
            ErrorKind::Temporary,
        ] {
            assert_eq!(ErrorKind::from_wire_name(k.wire_name()), Some(k));
        }
        for k in ALL_KINDS {
            assert_eq!(ErrorKind::from_name(k.name()), Some(k));
            assert_eq!(ErrorKind::from_exit_code(k.exit_code()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
        assert_eq!(ErrorKind::from_wire_name("nope"), None);
    }
}
