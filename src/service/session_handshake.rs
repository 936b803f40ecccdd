//! The handshake half of a [`Session`]: refusals (answered and logged), turning a
//! connection away, `CAPABILITY`, `AUTH` and `STARTTLS`. What may run when is
//! `service::access`; this file writes the answers.
#![forbid(unsafe_code)]

use std::io::Read;

use super::{Flow, Session, TURN_AWAY_DRAIN_MS, W, end_flow};
use crate::protocol::{AuthStep, EXTENSION_VERSION, LineReader, MAX_ITEMS, MAX_LINE};
use crate::service::access::Verdict;
use crate::service::channel::Channel;
use crate::{Error, Result};

impl Session<'_> {
    /// Refuse the connection before anything else, without holding this process:
    /// `NO <text>`, then read for a moment what the client may already have sent
    /// (closing on unread bytes would reset the connection, and the client would
    /// never see the reason), then end.
    pub(super) fn turn_away(
        &mut self,
        text: &[u8],
        lines: &mut LineReader<&mut dyn Read>,
        w: &mut W<'_>,
    ) -> Result<()> {
        self.log_refusal(text);
        w.no(text)?;
        w.flush()?;
        self.cfg
            .deadline
            .set_in(std::time::Duration::from_millis(TURN_AWAY_DRAIN_MS));
        let _ = lines.read_line();
        Ok(())
    }

    /// Answer `NO <text>` for a refusal verdict, and log it (rate-limited).
    pub(super) fn refuse(&mut self, v: &Verdict, w: &mut W<'_>) -> Result<()> {
        if let Verdict::Refuse(text) | Verdict::End(text) = v {
            self.log_refusal(text);
            w.no(text)?;
        }
        Ok(())
    }

    pub(super) fn capability(&mut self, w: &mut W<'_>, chan: &dyn Channel) -> Result<()> {
        self.extended = true;
        w.ok()?;
        w.cap("VERSION", Some(&EXTENSION_VERSION.to_string()))?;
        for (name, value) in self.access.capabilities(chan.is_tls()) {
            w.cap(name, value)?;
        }
        w.cap("STATUS", None)?;
        w.cap("SNAPSHOT", None)?;
        w.cap("PARTITIONS", None)?;
        w.cap("QUOTA", None)?;
        w.cap("SERVERTIME", None)?;
        w.cap("USERFILES", None)?;
        w.cap("SHARED", None)?;
        w.cap("FDELETED", None)?;
        w.cap("MAXLINE", Some(&MAX_LINE.to_string()))?;
        w.cap("MAXITEMS", Some(&MAX_ITEMS.to_string()))?;
        w.done("CAPABILITY", &[])?;
        Ok(())
    }

    pub(super) fn auth_step(
        &mut self,
        slot: &[u8],
        step: AuthStep,
        w: &mut W<'_>,
        chan: &dyn Channel,
    ) -> Result<Flow> {
        let v = match step {
            AuthStep::Begin(client_nonce) => self.access.begin(client_nonce, chan.is_tls(), w)?,
            AuthStep::Answer(a) => {
                let binding = chan.binding();
                let peer = self.cfg.peer.clone();
                self.access.answer(slot, binding.as_ref(), &a, &peer, w)?
            }
        };
        self.refuse(&v, w)?;
        Ok(end_flow(v))
    }

    /// `STARTTLS`: `OK`, then the handshake on the same connection. Bytes the client
    /// sent after `STARTTLS` and before the handshake would be read as if they had
    /// come through TLS (command injection): they end the session.
    pub(super) fn starttls(
        &mut self,
        w: &mut W<'_>,
        chan: &dyn Channel,
        buffered: usize,
    ) -> Result<Flow> {
        let mut v = self.access.starttls(chan.is_tls(), chan.can_tls());
        if v == Verdict::Run && buffered > 0 {
            v = Verdict::End(b"data after STARTTLS before the TLS handshake".to_vec());
        }
        let config = match (v, self.access.tls()) {
            (Verdict::Run, Some(c)) => c,
            (v, _) => {
                self.refuse(&v, w)?;
                return Ok(end_flow(v));
            }
        };
        w.ok()?;
        w.flush()?;
        chan.start_tls(config)
            .map_err(|e| Error::Protocol(format!("TLS handshake with {}: {e}", self.cfg.peer)))?;
        log::debug!(target: "cyrvault::session", "TLS started with {}", self.cfg.peer);
        Ok(Flow::Continue)
    }
}
