//! The IMAP client's error: which server, which command, what went wrong, and for NO/BAD
//! answers the server's response code and text, so callers can tell "the mailbox already
//! exists" from "the connection broke". Converts into the service's `Imap` (in
//! `crate::Error::Service`) for `?` in functions returning the crate `Result`.
#![forbid(unsafe_code)]

use std::fmt;

/// What kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapErrorKind {
    /// The address did not resolve or the TCP connection failed.
    Connect,
    /// Reading or writing the socket failed, or the server closed it.
    Io,
    /// The server sent something that is not IMAP (or too large to accept).
    Protocol,
    /// The command was refused with a tagged NO.
    No,
    /// The command was refused with a tagged BAD.
    Bad,
    /// The server ended the session with an untagged BYE.
    Bye,
    /// TLS was asked for and could not be had: the server offers none, or its
    /// certificate does not verify. Trying again cannot help.
    Tls,
}

/// An IMAP failure, with context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapError {
    /// The server address.
    pub server: String,
    /// The command, e.g. `create "user.bob.Work"` (keywords lowercased, first string
    /// argument quoted; never message bodies or passwords). Empty for connection setup.
    pub command: String,
    pub kind: ImapErrorKind,
    /// The response code name of a NO/BAD answer, uppercased (`ALREADYEXISTS`,
    /// `TRYCREATE`, `NONEXISTENT`, ...).
    pub code: Option<String>,
    /// The server's text, or what went wrong locally.
    pub text: String,
}

impl ImapError {
    /// Whether the server refused the command with NO (optionally with this code).
    pub fn is_no(&self, code: Option<&str>) -> bool {
        self.kind == ImapErrorKind::No
            && code.is_none_or(|want| {
                self.code
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(want))
            })
    }
}

impl fmt::Display for ImapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.kind {
            ImapErrorKind::No => Some("NO"),
            ImapErrorKind::Bad => Some("BAD"),
            _ => None,
        };
        match (status, self.command.is_empty()) {
            (Some(s), _) => {
                write!(f, "{} answered {s}", self.command)?;
                if let Some(code) = &self.code {
                    write!(f, " [{code}]")?;
                }
                write!(f, ": {}", self.text)
            }
            (None, true) => f.write_str(&self.text),
            (None, false) if self.kind == ImapErrorKind::Bye => {
                write!(f, "{}: server said BYE: {}", self.command, self.text)
            }
            (None, false) => write!(f, "{}: {}", self.command, self.text),
        }
    }
}

impl std::error::Error for ImapError {}

impl From<ImapError> for crate::Error {
    fn from(e: ImapError) -> Self {
        match e.kind {
            // the server cannot be trusted (or offers no TLS): exit 77, not "later"
            ImapErrorKind::Tls => crate::Error::server(
                crate::ErrorKind::Permission,
                format!("imap {}: {e}", e.server),
            ),
            _ => crate::Error::imap(e.server.clone(), e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(kind: ImapErrorKind, code: Option<&str>) -> ImapError {
        ImapError {
            server: "127.0.0.1:143".into(),
            command: "create \"user.bob\"".into(),
            kind,
            code: code.map(str::to_string),
            text: "Mailbox already exists".into(),
        }
    }

    #[test]
    fn display_and_conversion() {
        let no = e(ImapErrorKind::No, Some("ALREADYEXISTS"));
        assert_eq!(
            no.to_string(),
            "create \"user.bob\" answered NO [ALREADYEXISTS]: Mailbox already exists"
        );
        assert!(no.is_no(None) && no.is_no(Some("alreadyexists")) && !no.is_no(Some("TRYCREATE")));
        let io = e(ImapErrorKind::Io, None);
        assert_eq!(
            io.to_string(),
            "create \"user.bob\": Mailbox already exists"
        );
        assert!(!io.is_no(None));
        let crate_err: crate::Error = no.into();
        assert_eq!(
            crate_err.to_string(),
            "imap 127.0.0.1:143: create \"user.bob\" answered NO [ALREADYEXISTS]: Mailbox already exists"
        );
        assert!(crate_err.is_temporary());
    }
}
