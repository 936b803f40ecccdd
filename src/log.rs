//! Logging sinks: syslog for the service (under the same ident and facility rules as
//! Cyrus's `cyrus_init`), stderr for the admin CLI, and a panic hook that reports
//! panics to syslog (the only place a service panic is visible under master).
//!
//! Cyrus (lib/global.c, `cyrus_init`) opens syslog with `LOG_PID`, the ident
//! `<prefix>/<service>` where the prefix is `$CYRUS_SYSLOG_PREFIX` or else the
//! `syslog_prefix` option (plain `<service>` without either), and the facility from
//! the `syslog_facility` option or else its compile-time default. Upstream's default is
//! `LOG_LOCAL6`, but Debian builds with `--with-syslogfacility=MAIL`: Debian 12's Cyrus
//! 3.6.1 binaries log at facility MAIL (observed: `ctl_cyrusdb` sends `<21>`/`<19>`,
//! MAIL.notice/MAIL.err), so that is our default.

use std::ffi::{CString, c_int};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The facility when imapd.conf has no `syslog_facility`: what the Cyrus we target
/// (Debian's build) uses, `LOG_MAIL`.
pub const DEFAULT_FACILITY: c_int = libc::LOG_MAIL;

/// The syslog ident Cyrus would use for `service`: `$CYRUS_SYSLOG_PREFIX` wins over the
/// configured `syslog_prefix`; without either the ident is the service name itself.
pub fn syslog_ident(service: &str, env_prefix: Option<&str>, conf_prefix: Option<&str>) -> String {
    match env_prefix
        .filter(|p| !p.is_empty())
        .or(conf_prefix.filter(|p| !p.is_empty()))
    {
        Some(prefix) => format!("{prefix}/{service}"),
        None => service.to_string(),
    }
}

/// The facility named by an imapd.conf `syslog_facility` value (`LOCAL6`, `mail`, ...),
/// as Cyrus's `get_facility` accepts them; None for an unknown name.
pub fn parse_facility(name: &str) -> Option<c_int> {
    let facility = match name.to_ascii_uppercase().as_str() {
        "DAEMON" => libc::LOG_DAEMON,
        "MAIL" => libc::LOG_MAIL,
        "NEWS" => libc::LOG_NEWS,
        "USER" => libc::LOG_USER,
        "LOCAL0" => libc::LOG_LOCAL0,
        "LOCAL1" => libc::LOG_LOCAL1,
        "LOCAL2" => libc::LOG_LOCAL2,
        "LOCAL3" => libc::LOG_LOCAL3,
        "LOCAL4" => libc::LOG_LOCAL4,
        "LOCAL5" => libc::LOG_LOCAL5,
        "LOCAL6" => libc::LOG_LOCAL6,
        "LOCAL7" => libc::LOG_LOCAL7,
        _ => return None,
    };
    Some(facility)
}

/// The syslog priority for a `log` level.
fn priority(level: Level) -> c_int {
    match level {
        Level::Error => libc::LOG_ERR,
        Level::Warn => libc::LOG_WARNING,
        Level::Info => libc::LOG_NOTICE,
        Level::Debug | Level::Trace => libc::LOG_DEBUG,
    }
}

/// Bytes safe to hand to C as one message: interior NULs become spaces.
fn c_message(message: &str) -> CString {
    let bytes: Vec<u8> = message
        .bytes()
        .map(|b| if b == 0 { b' ' } else { b })
        .collect();
    // No interior NUL is left, so this cannot fail; fall back to an empty message anyway.
    CString::new(bytes).unwrap_or_default()
}

/// Send one message to syslog with the given priority (works before and after
/// `init_syslog`; before it, libc uses its default ident).
pub fn syslog_raw(priority: c_int, message: &str) {
    let msg = c_message(message);
    // SAFETY: the format is a static NUL-terminated "%s" and `msg` is a valid C string
    // that outlives the call; syslog copies what it needs.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr()) };
}

/// The service's sink: every record goes to syslog.
struct SyslogLogger;

static SYSLOG_LOGGER: SyslogLogger = SyslogLogger;

impl Log for SyslogLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            syslog_raw(priority(record.level()), &record.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// The CLI's sink: `cyrvault: <level>: <message>` on stderr.
struct StderrLogger;

static STDERR_LOGGER: StderrLogger = StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let level = record.level().as_str().to_ascii_lowercase();
            let _ = writeln!(std::io::stderr(), "cyrvault: {level}: {}", record.args());
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// (Re)open syslog with `ident` and `facility` (with `LOG_PID`, as Cyrus does) and make it
/// the `log` sink. May be called again (for example once the config is read): syslog is
/// reopened with the new ident; the `log` sink is only installed the first time.
pub fn init_syslog(ident: &str, facility: c_int, level: LevelFilter) {
    // openlog keeps the pointer: the ident must live as long as the process. At most a
    // few idents are ever opened per process, so leaking them is the simple, safe choice.
    let ident: &'static CString = Box::leak(Box::new(c_message(ident)));
    // SAFETY: `ident` is a valid C string that is never freed; closelog/openlog have no
    // other preconditions.
    unsafe {
        libc::closelog();
        libc::openlog(ident.as_ptr(), libc::LOG_PID, facility);
    }
    // A logger may already be installed (second call, or the CLI's): keep it.
    let _ = log::set_logger(&SYSLOG_LOGGER);
    log::set_max_level(level);
}

/// Make stderr the `log` sink (the admin CLI). Ignored if a logger is already installed.
pub fn init_stderr(level: LevelFilter) {
    let _ = log::set_logger(&STDERR_LOGGER);
    log::set_max_level(level);
}

static PANIC_HOOK: AtomicBool = AtomicBool::new(false);

/// Install (once) a panic hook that logs the panic message and location to syslog at
/// LOG_ERR, then runs the previous hook (which prints to stderr).
pub fn install_panic_hook() {
    if PANIC_HOOK.swap(true, Ordering::SeqCst) {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = panic_message(info.payload());
        syslog_raw(libc::LOG_ERR, &format!("panic{location}: {message}"));
        previous(info);
    }));
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ident_prefers_environment_then_config() {
        assert_eq!(syslog_ident("cyrvault", None, None), "cyrvault");
        assert_eq!(
            syslog_ident("cyrvault", None, Some("cyrus")),
            "cyrus/cyrvault"
        );
        assert_eq!(
            syslog_ident("cyrvault", Some("env"), Some("cyrus")),
            "env/cyrvault"
        );
        assert_eq!(syslog_ident("cyrvault", Some(""), None), "cyrvault");
    }

    #[test]
    fn facilities_are_case_insensitive() {
        assert_eq!(parse_facility("local6"), Some(libc::LOG_LOCAL6));
        assert_eq!(parse_facility("MAIL"), Some(libc::LOG_MAIL));
        assert_eq!(parse_facility("bogus"), None);
    }

    #[test]
    fn messages_with_nul_survive() {
        assert_eq!(c_message("a\0b").as_bytes(), b"a b");
    }

    #[test]
    fn panic_payloads_are_readable() {
        let p: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(panic_message(p.as_ref()), "boom");
        let p: Box<dyn std::any::Any + Send> = Box::new(String::from("bang"));
        assert_eq!(panic_message(p.as_ref()), "bang");
    }
}
