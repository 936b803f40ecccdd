//! imapd.conf (being written).
#![forbid(unsafe_code)]

/// A bad or missing configuration option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: option {option}: {message}")]
pub struct ConfigError {
    /// The config file (or "-C" file) the option came from.
    pub file: String,
    /// The option name as written (with its service prefix, if any).
    pub option: String,
    pub message: String,
}
