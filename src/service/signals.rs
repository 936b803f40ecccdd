//! Signal handling for the `cyrvaultd` accept loop (not used when Cyrus's own
//! `service.c` drives the entry points: it installs its own handlers).
//!
//! The handlers only set flags, except one case: a shutdown signal (SIGTERM, SIGINT,
//! SIGQUIT) that arrives while a session is running ends the process at once with
//! EX_TEMPFAIL (75), which master counts as a normal exit; the kernel releases every
//! fcntl lock with the process, and the service only reads Cyrus's files, so nothing is
//! left half-written. While idle, handlers are installed without SA_RESTART so the
//! accept-lock wait and `poll` return EINTR and the loop exits with status 0.

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static HANGUP: AtomicBool = AtomicBool::new(false);
static ALARM: AtomicBool = AtomicBool::new(false);
static SHUTDOWN: AtomicBool = AtomicBool::new(false);
static IN_SESSION: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: c_int) {
    match signal {
        libc::SIGHUP => HANGUP.store(true, Ordering::SeqCst),
        libc::SIGALRM => ALARM.store(true, Ordering::SeqCst),
        _ => {
            SHUTDOWN.store(true, Ordering::SeqCst);
            if IN_SESSION.load(Ordering::SeqCst) {
                // SAFETY: _exit is async-signal-safe; it skips destructors on purpose.
                unsafe { libc::_exit(crate::error::EX_TEMPFAIL) };
            }
        }
    }
}

/// Which signal-driven reason there is to stop, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM/SIGINT/SIGQUIT: master is shutting down.
    Shutdown,
    /// SIGHUP: master reloaded its config; finish and exit.
    Hangup,
    /// SIGALRM: the idle (reuse) timeout expired.
    IdleTimeout,
}

/// The pending stop reason, most urgent first.
pub fn pending() -> Option<Stop> {
    if SHUTDOWN.load(Ordering::SeqCst) {
        Some(Stop::Shutdown)
    } else if HANGUP.load(Ordering::SeqCst) {
        Some(Stop::Hangup)
    } else if ALARM.load(Ordering::SeqCst) {
        Some(Stop::IdleTimeout)
    } else {
        None
    }
}

/// Forget an expired alarm (after it was cancelled in time or handled).
pub fn clear_alarm() {
    ALARM.store(false, Ordering::SeqCst);
}

fn install(restart: bool) -> nix::Result<()> {
    let flags = if restart {
        SaFlags::SA_RESTART
    } else {
        SaFlags::empty()
    };
    let action = SigAction::new(SigHandler::Handler(on_signal), flags, SigSet::empty());
    for signal in [
        Signal::SIGHUP,
        Signal::SIGALRM,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
    ] {
        // SAFETY: on_signal only touches atomics and calls the async-signal-safe _exit.
        unsafe { sigaction(signal, &action) }?;
    }
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: ignoring SIGPIPE has no preconditions; a closed client becomes EPIPE.
    unsafe { sigaction(Signal::SIGPIPE, &ignore) }?;
    Ok(())
}

/// Idle mode: handlers interrupt blocking calls (no SA_RESTART).
pub fn enter_idle() -> nix::Result<()> {
    IN_SESSION.store(false, Ordering::SeqCst);
    install(false)
}

/// Session mode: SIGHUP/SIGALRM restart interrupted calls (the session's reads and
/// writes are not disturbed); a shutdown signal exits with EX_TEMPFAIL at once.
pub fn enter_session() -> nix::Result<()> {
    install(true)?;
    IN_SESSION.store(true, Ordering::SeqCst);
    if SHUTDOWN.load(Ordering::SeqCst) {
        // SAFETY: plain process exit; a shutdown arrived between accept and here.
        unsafe { libc::_exit(crate::error::EX_TEMPFAIL) };
    }
    Ok(())
}
