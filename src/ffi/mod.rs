//! The C ABI: the three entry points Cyrus's `master/service.h` declares, and the only
//! `extern "C"` items in the crate.
//!
//! ```c
//! int  service_init(int argc, char **argv, char **envp);  /* once per process; never exits */
//! int  service_main(int argc, char **argv, char **envp);  /* once per client on fds 0/1 */
//! void service_abort(int error) __attribute__((noreturn));
//! ```
//!
//! They can be driven by Cyrus's own `master/service.c` (linked with `libcyrvault.a`)
//! or by our `cyrvaultd` binary, whose accept loop (`service::master`) calls the same
//! Rust functions. Every body runs inside [`guard::guard`], so a panic is logged and
//! turned into a return code instead of unwinding into C.

pub mod args;
pub mod guard;

use std::ffi::{OsString, c_char, c_int};
use std::sync::OnceLock;

use crate::error::{EX_SOFTWARE, EX_TEMPFAIL};
use crate::service::stdio::{abort_process, serve_stdio_with, service_name_from_env};
use crate::service::{self, ServiceContext};

/// The context `service_init` built, shared by every `service_main` of this process.
static CONTEXT: OnceLock<ServiceContext> = OnceLock::new();

/// Safe body of `service_init`: set up logging and the service context once. A second
/// call is a no-op that succeeds.
fn init_from_args(args: &[OsString]) -> c_int {
    if CONTEXT.get().is_some() {
        return 0;
    }
    // argv[0] is the program; Cyrus's service.c has already taken its own options out,
    // but `-C` may still be present when we are driven by something else.
    let rest = args.get(1..).unwrap_or_default();
    let options = match service::master::RuntimeOptions::parse(rest) {
        Ok(options) => options,
        Err(err) => {
            crate::log::syslog_raw(libc::LOG_ERR, &format!("service_init: {err}"));
            return guard::exit_code(&err);
        }
    };
    let name = service_name_from_env();
    service::master::setup_logging(&name, options.config.as_deref());
    match service::init(&name, options.config.clone(), &options.passthrough) {
        Ok(ctx) => {
            let _ = CONTEXT.set(ctx);
            0
        }
        Err(err) => {
            log::error!("service_init: {err}");
            guard::exit_code(&err)
        }
    }
}

/// Safe body of `service_main`: serve the client on fds 0/1, then point them at
/// /dev/null. Returns 0 when this process may take another client.
pub fn serve_stdio() -> c_int {
    let Some(ctx) = CONTEXT.get() else {
        log::error!("service_main called before a successful service_init");
        return EX_SOFTWARE;
    };
    serve_stdio_with(ctx, crate::service::stdio::listener())
}

/// Cyrus entry point: called once per process before any client. Returns 0 on success,
/// a sysexits code on failure; never exits.
///
/// # Safety
/// `argv` must be NULL or hold `argc` valid C strings (as `main` receives them).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn service_init(
    argc: c_int,
    argv: *mut *mut c_char,
    envp: *mut *mut c_char,
) -> c_int {
    let _ = envp; // the environment is read through std::env
    guard::guard("service_init", EX_SOFTWARE, || {
        crate::log::install_panic_hook();
        // SAFETY: the caller passes main's argv (argc valid C strings or NULL).
        let args = unsafe { args::argv_to_vec(argc, argv.cast_const().cast()) };
        init_from_args(&args)
    })
}

/// Cyrus entry point: serve one client connected on fds 0 (read) and 1 (write).
/// Returns 0 when done with this client and ready for another.
///
/// # Safety
/// Always safe to call; the pointer arguments are not used (declared for Cyrus's ABI).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn service_main(
    argc: c_int,
    argv: *mut *mut c_char,
    envp: *mut *mut c_char,
) -> c_int {
    let _ = (argc, argv, envp); // everything was taken in service_init
    guard::guard("service_main", EX_TEMPFAIL, serve_stdio)
}

/// Cyrus entry point: release everything and exit with `error`. Never returns.
#[unsafe(no_mangle)]
pub extern "C" fn service_abort(error: c_int) -> ! {
    let code = guard::guard("service_abort", error, || {
        log::debug!("service_abort({error})");
        error
    });
    abort_process(code)
}
