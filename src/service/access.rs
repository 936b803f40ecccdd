//! Who may do what on a connection, before the session looks at a request: the
//! access policy (secrets, `cyrvaultd_allow_unauthenticated`, TLS), the bounds on
//! a client that has not authenticated yet (line length, number of requests, time,
//! connections per address, failed AUTH), `STARTTLS` and `AUTH` themselves.
//!
//! The default is closed: without a secret and without
//! `cyrvaultd_allow_unauthenticated: yes`, every request but the handshake (`PING`,
//! `QUIT`, `CAPABILITY`, `STARTTLS`, `AUTH`) is refused. doc/security.md.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;

use super::auth::{AuthOutcome, Authenticator};
use super::peers::{PeerSlot, PeerTable};
use super::transport::{DEFAULT_AUTH_TIMEOUT, Deadline};
use crate::protocol::auth::BINDING_LEN;
use crate::protocol::{AUTH_LEN, ProtocolError, ReplyWriter, Request};
use crate::secret::Secret;

/// Longest request line before authentication (an `AUTH` line is about 100 bytes
/// plus the servername).
pub const PREAUTH_MAX_LINE: usize = 1024;
/// Most requests before authentication; the session ends after that many.
pub const PREAUTH_MAX_REQUESTS: u32 = 16;

/// Who may run requests on this service.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// Secrets `AUTH` accepts: `cyrvaultd_secret_file`, then during a rotation
    /// `cyrvaultd_secret_file_next`. Empty: `AUTH` is not offered.
    pub secrets: Vec<Secret>,
    /// `cyrvaultd_allow_unauthenticated`: serve requests without `AUTH` (what
    /// Cyrus 3.13's stock Perl client needs; trusted networks only).
    pub allow_unauthenticated: bool,
    /// The TLS configuration when a certificate is configured: `STARTTLS` is then
    /// offered, and `AUTH` is refused outside TLS.
    pub tls: Option<Arc<ServerConfig>>,
    /// The table shared with the other processes of the service (per-address
    /// limits, failed-AUTH delays); None: no such limits (tests).
    pub peers: Option<Arc<PeerTable>>,
    /// `cyrvaultd_auth_timeout`: time a connection has to authenticate.
    pub auth_timeout: Duration,
}

impl AccessPolicy {
    /// The closed default with these secrets: authentication required, no TLS.
    pub fn required(secrets: Vec<Secret>) -> Self {
        AccessPolicy {
            secrets,
            auth_timeout: Duration::from_secs(DEFAULT_AUTH_TIMEOUT),
            ..Default::default()
        }
    }

    /// What `cyrvaultd_allow_unauthenticated: yes` gives (and the secrets, if any,
    /// for clients that authenticate anyway to check the server).
    pub fn open(secrets: Vec<Secret>) -> Self {
        AccessPolicy {
            allow_unauthenticated: true,
            ..AccessPolicy::required(secrets)
        }
    }
}

/// What to do with a request, or after one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Run,
    /// Answer `NO <text>` and go on.
    Refuse(Vec<u8>),
    /// Answer `NO <text>` and end the session.
    End(Vec<u8>),
}

/// The per-connection state.
pub struct Access {
    policy: AccessPolicy,
    auth: Authenticator,
    peer: Option<IpAddr>,
    slot: Option<PeerSlot>,
    over_limit: bool,
    requests: u32,
    deadline: Deadline,
}

type W<'w> = ReplyWriter<&'w mut dyn std::io::Write>;

impl Access {
    /// A connection from `peer` starts: take one of its unauthenticated slots and
    /// set the time it has to authenticate (both only when authentication is
    /// required).
    pub fn start(policy: &AccessPolicy, peer: Option<IpAddr>, deadline: Deadline) -> Self {
        let mut a = Access {
            auth: Authenticator::new(policy.secrets.clone()),
            policy: policy.clone(),
            peer,
            slot: None,
            over_limit: false,
            requests: 0,
            deadline,
        };
        if a.required() {
            a.deadline.set_in(a.policy.auth_timeout);
            if let (Some(t), Some(ip)) = (&a.policy.peers, peer) {
                match t.enter(ip) {
                    Ok(Some(s)) => a.slot = Some(s),
                    Ok(None) => a.over_limit = true,
                    Err(e) => log::error!(
                        target: "cyrvault::session",
                        "peer table {}: {e} (no per-address limit for {ip})",
                        t.path().display()
                    ),
                }
            }
        }
        a
    }

    /// Whether requests need `AUTH` first (the default).
    pub fn required(&self) -> bool {
        !self.policy.allow_unauthenticated
    }

    /// Whether the client has not passed the gate yet (pre-authentication bounds
    /// apply).
    pub fn before_auth(&self) -> bool {
        self.required() && !self.auth.authenticated()
    }

    /// The line bound in force.
    pub fn max_line(&self) -> usize {
        if self.before_auth() {
            PREAUTH_MAX_LINE
        } else {
            crate::protocol::MAX_LINE
        }
    }

    /// Whether the connection is turned away before anything is read: its address
    /// already has `cyrvaultd_peer_limit` connections that have not authenticated.
    pub fn refuse_at_start(&self) -> Option<Vec<u8>> {
        let limit = self.policy.peers.as_ref().map_or(0, |t| t.limit());
        self.over_limit.then(|| {
            format!(
                "too many unauthenticated connections from this address (cyrvaultd_peer_limit {limit})"
            )
            .into_bytes()
        })
    }

    /// Decide on `req` (any request but `QUIT`).
    pub fn check(&mut self, req: &Request) -> Verdict {
        if !self.before_auth() {
            return Verdict::Run;
        }
        self.requests = self.requests.saturating_add(1);
        if self.requests > PREAUTH_MAX_REQUESTS {
            return Verdict::End(
                format!("too many requests before authentication (limit {PREAUTH_MAX_REQUESTS})")
                    .into_bytes(),
            );
        }
        if req.allowed_before_auth() {
            Verdict::Run
        } else {
            Verdict::Refuse(b"authentication required".to_vec())
        }
    }

    /// A line, command or slot over its bound: before authentication it ends the
    /// session.
    pub fn malformed(&self, e: &ProtocolError) -> Verdict {
        if self.before_auth() {
            Verdict::End(e.to_string().into_bytes())
        } else {
            Verdict::Refuse(e.to_string().into_bytes())
        }
    }

    /// `STARTTLS`: whether to go ahead (`Run`: answer `OK`, then the handshake).
    pub fn starttls(&self, tls_active: bool, channel_can: bool) -> Verdict {
        if tls_active {
            Verdict::Refuse(b"TLS is already active".to_vec())
        } else if self.policy.tls.is_none() || !channel_can {
            Verdict::Refuse(b"TLS is not available (no tls_server_cert)".to_vec())
        } else if self.auth.authenticated() {
            // what was said before TLS cannot be vouched for afterwards
            Verdict::Refuse(b"STARTTLS must come before AUTH".to_vec())
        } else {
            Verdict::Run
        }
    }

    /// The TLS configuration for the handshake.
    pub fn tls(&self) -> Option<Arc<ServerConfig>> {
        self.policy.tls.clone()
    }

    /// The extension capabilities this connection may use now.
    pub fn capabilities(&self, tls_active: bool) -> Vec<(&'static str, Option<&'static str>)> {
        let mut caps = Vec::new();
        if self.policy.tls.is_some() && !tls_active {
            caps.push(("STARTTLS", None));
        }
        if self.auth.offered() {
            caps.push(("AUTH", Some("HMAC-SHA256-MUTUAL")));
        }
        if self.policy.allow_unauthenticated {
            // requests are served without AUTH (a client may still authenticate to
            // have the server prove itself)
            caps.push(("UNAUTHENTICATED", None));
        }
        caps
    }

    /// `AUTH <slot> BEGIN <client nonce>`.
    pub fn begin(
        &mut self,
        client_nonce: [u8; AUTH_LEN],
        tls_active: bool,
        w: &mut W<'_>,
    ) -> crate::Result<Verdict> {
        if self.policy.tls.is_some() && !tls_active {
            return Ok(Verdict::Refuse(
                b"TLS required: send STARTTLS before AUTH".to_vec(),
            ));
        }
        if let (Some(t), Some(ip)) = (&self.policy.peers, self.peer)
            && let Some(left) = t.penalty(ip)
        {
            return Ok(Verdict::End(
                format!(
                    "authentication failed recently from this address: try again in {} ms",
                    left.as_millis()
                )
                .into_bytes(),
            ));
        }
        match self.auth.begin(client_nonce)? {
            None => Ok(Verdict::Refuse(b"authentication not configured".to_vec())),
            Some(nonce) => {
                w.ok()?;
                w.challenge(&nonce)?;
                w.done("AUTH", &[])?;
                Ok(Verdict::Run)
            }
        }
    }

    /// `AUTH <slot> ANSWER <hmac>`. A wrong answer ends the session at once (no
    /// delay holds this process); the address's next tries are refused for
    /// `peers::FAIL_DELAY`.
    pub fn answer(
        &mut self,
        slot: &[u8],
        binding: Option<&[u8; BINDING_LEN]>,
        given: &[u8; AUTH_LEN],
        peer_text: &str,
        w: &mut W<'_>,
    ) -> crate::Result<Verdict> {
        match self.auth.answer(slot, binding, given) {
            AuthOutcome::Accepted(proof) => {
                self.deadline.lift();
                self.slot = None;
                log::info!(
                    target: "cyrvault::auth",
                    "auth ok from {peer_text}{}",
                    if binding.is_some() { " (TLS)" } else { "" }
                );
                w.ok()?;
                w.proof(&proof)?;
                w.done("AUTH", &[])?;
                Ok(Verdict::Run)
            }
            AuthOutcome::NotConfigured => {
                Ok(Verdict::Refuse(b"authentication not configured".to_vec()))
            }
            AuthOutcome::NoChallenge => Ok(Verdict::Refuse(b"no challenge outstanding".to_vec())),
            AuthOutcome::Rejected => {
                if let (Some(t), Some(ip)) = (&self.policy.peers, self.peer)
                    && let Err(e) = t.punish(ip)
                {
                    log::error!(target: "cyrvault::auth", "peer table {}: {e}", t.path().display());
                }
                if super::refusal_log::allow() {
                    log::warn!(target: "cyrvault::auth", "auth failed from {peer_text}");
                }
                Ok(Verdict::End(b"authentication failed".to_vec()))
            }
        }
    }
}

/// Seconds from an option value (`cyrvaultd_timeout`, `cyrvaultd_auth_timeout`).
pub fn seconds(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(line: &str) -> Request {
        crate::protocol::parse_request(line.as_bytes()).unwrap()
    }

    #[test]
    fn closed_by_default_and_bounded_before_auth() {
        let mut a = Access::start(
            &AccessPolicy::required(Vec::new()),
            None,
            Deadline::default(),
        );
        assert!(a.required() && a.before_auth());
        assert_eq!(a.max_line(), PREAUTH_MAX_LINE);
        assert_eq!(a.check(&req("CAPABILITY s")), Verdict::Run);
        assert_eq!(a.check(&req("STARTTLS s")), Verdict::Run);
        assert_eq!(
            a.check(&req("USERS s")),
            Verdict::Refuse(b"authentication required".to_vec())
        );
        for _ in 3..PREAUTH_MAX_REQUESTS {
            assert_eq!(a.check(&req("PING")), Verdict::Run);
        }
        assert!(matches!(a.check(&req("PING")), Verdict::End(_)));
        assert!(
            a.capabilities(false).is_empty(),
            "no secret: no AUTH offered"
        );
    }

    #[test]
    fn open_policy_runs_everything() {
        let mut a = Access::start(&AccessPolicy::open(Vec::new()), None, Deadline::default());
        assert!(!a.before_auth());
        assert_eq!(a.max_line(), crate::protocol::MAX_LINE);
        for _ in 0..100 {
            assert_eq!(a.check(&req("USERS s")), Verdict::Run);
        }
    }

    #[test]
    fn starttls_rules() {
        let a = Access::start(
            &AccessPolicy::required(Vec::new()),
            None,
            Deadline::default(),
        );
        assert!(
            matches!(a.starttls(false, true), Verdict::Refuse(t) if t.starts_with(b"TLS is not available"))
        );
        assert!(matches!(a.starttls(true, true), Verdict::Refuse(_)));
    }

    #[test]
    fn seconds_option() {
        assert_eq!(seconds(" 600 "), Some(Duration::from_secs(600)));
        assert_eq!(seconds("0"), None);
        assert_eq!(seconds("soon"), None);
    }
}
