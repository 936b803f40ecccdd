//! What a test does when something it needs is missing (PostgreSQL, Cyrus's tools, the
//! `cyrus` user, syslog capture, a server capability, a reader to cross-check with):
//! it FAILS, naming what is missing and how to get it. Only an explicit
//! `CYRVAULT_ALLOW_SKIP=1` in the environment turns that into a printed "SKIPPED" and a
//! pass; CI never sets it, so a test cannot pass there without running.

/// The environment variable that lets a test whose prerequisite is missing pass.
pub const ALLOW_SKIP: &str = "CYRVAULT_ALLOW_SKIP";

/// Whether skipping was allowed explicitly.
pub fn skip_allowed() -> bool {
    std::env::var_os(ALLOW_SKIP).is_some_and(|v| v == "1")
}

/// `test` cannot run because `what` is missing: panic (the test fails) unless
/// skipping is allowed, in which case say so on stderr and return (the caller then
/// returns without testing).
#[track_caller]
pub fn missing(test: &str, what: &str) {
    if skip_allowed() {
        eprintln!("SKIPPED {test}: {what} ({ALLOW_SKIP}=1)");
        return;
    }
    panic!(
        "{test} cannot run: {what}. Install it (scripts/setup.sh does), or set \
         {ALLOW_SKIP}=1 to let this test pass without running"
    );
}

/// `Some(x)` as is; `None` is [`missing`] (so the caller returns when allowed).
#[track_caller]
pub fn require<T>(test: &str, what: &str, x: Option<T>) -> Option<T> {
    if x.is_none() {
        missing(test, what);
    }
    x
}

#[test]
fn a_missing_prerequisite_fails_unless_skipping_is_allowed() {
    // Run in a child process so the variable is set for it alone.
    if std::env::var_os("CYRVAULT_PREREQ_CHILD").is_some() {
        missing("child", "nothing at all");
        println!("RETURNED");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let child = |allow: Option<&str>| {
        let mut c = std::process::Command::new(&exe);
        c.args([
            "--exact",
            "prerequisite::a_missing_prerequisite_fails_unless_skipping_is_allowed",
            "--nocapture",
        ])
        .env("CYRVAULT_PREREQ_CHILD", "1")
        .env_remove(ALLOW_SKIP);
        if let Some(v) = allow {
            c.env(ALLOW_SKIP, v);
        }
        c.output().unwrap()
    };
    let out = child(None);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot run: nothing at all"), "{err}");
    let out = child(Some("yes"));
    assert!(!out.status.success(), "only 1 allows skipping: {out:?}");
    let out = child(Some("1"));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("RETURNED"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SKIPPED child"));
}
