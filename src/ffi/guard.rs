//! The one panic guard every exported function goes through: a panic must never unwind
//! into C (that aborts the process without a word). It is caught here, logged to
//! syslog, and turned into the caller's fallback code.

use std::panic::{self, AssertUnwindSafe};

/// Run `body`; if it panics, log the panic (message and which entry point) to syslog
/// and return `fallback` instead.
///
/// `AssertUnwindSafe` is sound here: after a panic the only state the caller sees is
/// the fallback code, and the process is expected to exit soon after (Cyrus treats a
/// non-zero `service_init` as fatal, and master reaps a failing child).
pub(crate) fn guard<T>(entry: &'static str, fallback: T, body: impl FnOnce() -> T) -> T {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            let message = crate::log::panic_message(payload.as_ref());
            crate::log::syslog_raw(
                libc::LOG_ERR,
                &format!("{entry}: caught a panic, returning the fallback code: {message}"),
            );
            fallback
        }
    }
}

/// The exit code for a failed library call: the error's sysexits class, never 0.
pub(crate) fn exit_code(err: &crate::Error) -> i32 {
    match err.exit_code() {
        0 => crate::error::EX_SOFTWARE,
        code => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_values_through() {
        assert_eq!(guard("test", -1, || 5), 5);
    }

    #[test]
    fn turns_a_panic_into_the_fallback() {
        let code = guard("test", 70, || -> i32 { panic!("deliberate test panic") });
        assert_eq!(code, 70);
    }

    #[test]
    fn error_codes_are_never_zero() {
        let err = crate::Error::Other("x".into());
        assert_eq!(exit_code(&err), crate::error::EX_SOFTWARE);
        let err = crate::Error::Protocol("x".into());
        assert_eq!(exit_code(&err), crate::error::EX_TEMPFAIL);
    }
}
