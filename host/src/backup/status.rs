//! The live status of a running `cyrvaultd` (`STATUS`, doc/protocol.md 2.3), as
//! `cyrvault status --server` shows it: what every process master started did since
//! master started, what the answering process did, and the Cyrus it serves.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::Serialize;

use super::server::Server;
use super::{BackupError, Result};

/// One `STATUS` answer, sorted by scope.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceStatus {
    /// `host:port` asked.
    pub server: String,
    /// Its servername (the slot).
    pub servername: String,
    /// Service-wide since master started (`service_*` keys, prefix removed); None
    /// when the service has no counters file (an older cyrvaultd, or not under
    /// master).
    pub service: Option<BTreeMap<String, u64>>,
    /// The answering process's own figures (the unprefixed keys).
    pub process: BTreeMap<String, u64>,
    /// The Cyrus it serves: `version` and conventions (`cyrus_*` keys, prefix
    /// removed).
    pub cyrus: BTreeMap<String, String>,
}

impl ServiceStatus {
    /// Sort `(key, value)` lines by their prefix; numbers that do not parse are kept
    /// as text under `cyrus` only if they are Cyrus facts, else dropped (clients
    /// ignore what they do not know).
    pub fn from_lines(server: &str, servername: &str, lines: Vec<(String, String)>) -> Self {
        let mut st = ServiceStatus {
            server: server.to_string(),
            servername: servername.to_string(),
            ..Default::default()
        };
        for (k, v) in lines {
            if let Some(name) = k.strip_prefix("cyrus_") {
                st.cyrus.insert(name.to_string(), v);
            } else if let Some(name) = k.strip_prefix("service_") {
                if let Ok(n) = v.parse() {
                    st.service
                        .get_or_insert_with(BTreeMap::new)
                        .insert(name.to_string(), n);
                }
            } else if let Ok(n) = v.parse() {
                st.process.insert(k, n);
            }
        }
        st
    }

    /// A service-wide figure (0 when absent).
    pub fn service(&self, name: &str) -> u64 {
        self.service
            .as_ref()
            .and_then(|m| m.get(name))
            .copied()
            .unwrap_or(0)
    }
}

impl Server {
    /// Ask the service for its `STATUS` (after authentication, like every request).
    pub fn status(&mut self) -> Result<ServiceStatus> {
        if self.extensions.is_none() || !self.has("STATUS") {
            return Err(BackupError::refused(format!(
                "{}: the server does not offer STATUS (a stock backupcyrusd, or an older cyrvaultd)",
                self.addr
            )));
        }
        let lines = self
            .client
            .status()
            .map_err(|e| BackupError::protocol(format!("{}: STATUS: {e}", self.addr)))?;
        Ok(ServiceStatus::from_lines(
            &self.addr,
            &self.servername,
            lines,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_sorted_by_scope() {
        let l = |k: &str, v: &str| (k.to_string(), v.to_string());
        let st = ServiceStatus::from_lines(
            "h:1",
            "imap1",
            vec![
                l("sessions_total", "3"),
                l("service_sessions", "40"),
                l("service_since", "1700000000"),
                l("cyrus_version", "3.6.1"),
                l("cyrus_partitions", "2"),
                l("future_text", "abc"),
            ],
        );
        assert_eq!(st.process["sessions_total"], 3);
        assert_eq!(st.service("sessions"), 40);
        assert_eq!(st.service("errors"), 0);
        assert_eq!(st.cyrus["version"], "3.6.1");
        assert_eq!(st.cyrus["partitions"], "2");
        assert!(!st.process.contains_key("future_text"));
        let none = ServiceStatus::from_lines("h:1", "s", vec![l("sessions_total", "1")]);
        assert!(none.service.is_none());
    }
}
