//! Every Cyrus we can run for real: Debian 12's 3.6 (the system's) and 3.10 from
//! bookworm-backports (unpacked beside it by `scripts/setup.sh` into
//! `/opt/cyrus-3.10`). [`per_cyrus!`] turns a test body taking a
//! [`CyrusInstall`] into one test per installation, so the integration tests that
//! matter (service under master, backup, incremental, restore, lock order against
//! imapd) run on both without being copied. A missing installation fails the test.
//!
//! The tests here check the version machinery itself on each: the sandbox runs
//! that installation's programs, a new mailbox gets the index version the
//! `cyrus::version::SERIES` table says, and cyrvaultd under that master finds the
//! release by asking it and logs it at start with the lock naming it implies.

use cyrvault::cyrus::index::parse_header;
use cyrvault::cyrus::version::{SERIES, UserLockNaming, conventions_for};
use cyrvault_testkit::sandbox::{CyrusInstall, Sandbox, SandboxOptions, ServiceLine};

/// One test per real Cyrus: `per_cyrus!(name)` calls `fn name(&CyrusInstall)` from
/// the tests `name::cyrus36` and `name::cyrus310`.
#[macro_export]
macro_rules! per_cyrus {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn cyrus36() {
                super::$name(&$crate::cyrus_versions::install("3.6"))
            }
            #[test]
            fn cyrus310() {
                super::$name(&$crate::cyrus_versions::install("3.10"))
            }
        }
    )+};
}

/// The installation of a release series; panics (the test fails) if it is missing.
pub fn install(series: &str) -> CyrusInstall {
    CyrusInstall::by_series(series).unwrap_or_else(|e| panic!("Cyrus {series}: {e}"))
}

/// A sandbox of `cyrus` with cyrvaultd under its master.
fn start(cyrus: &CyrusInstall, hint: &str) -> Sandbox {
    Sandbox::start(SandboxOptions {
        name_hint: hint.into(),
        extra_services: vec![ServiceLine::tcp(
            "cyrvaultd",
            env!("CARGO_BIN_EXE_cyrvaultd"),
        )],
        cyrus: Some(cyrus.clone()),
        ..SandboxOptions::default()
    })
    .unwrap_or_else(|e| panic!("starting a Cyrus {} sandbox: {e}", cyrus.version))
}

fn release_is_found_and_logged(cyrus: &CyrusInstall) {
    let sb = start(cyrus, "versions");
    // The sandbox runs this installation's programs: master's own -V says so, and
    // the IMAP greeting names the same release.
    let series = cyrus.version.series();
    let mut admin = sb.admin().unwrap();
    let greeting = admin.greeting().to_string();
    assert!(
        greeting.contains(&format!("{}.{}", series.0, series.1)),
        "{greeting}"
    );
    admin.create("user.vera").unwrap();
    admin.logout().unwrap();
    let row = SERIES
        .iter()
        .find(|s| (s.major, s.minor) == series)
        .expect("a supported series");
    let dir = sb.mbpath("user.vera").unwrap();
    let index = std::fs::read(dir.join("cyrus.index")).unwrap();
    assert_eq!(
        parse_header(&index).unwrap().minor_version,
        row.index_version,
        "index version of a new mailbox on Cyrus {}",
        cyrus.version
    );

    // cyrvaultd asks its master; the one start line names release and lock naming.
    let s = std::net::TcpStream::connect(sb.service_addrs["cyrvaultd"]).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut c = cyrvault::protocol::client::Client::new(
        s.try_clone().unwrap(),
        s,
        sb.servername.as_bytes(),
    );
    c.ping().unwrap();
    let (conventions, _) = conventions_for(&cyrus.version);
    let want = format!(
        "cyrus {} (from {} -V); user namespace lock {}",
        cyrus.version,
        cyrus.program("master").display(),
        conventions.user_lock.example()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !sb.syslog().contains(&want) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        sb.syslog().contains(&want),
        "no start line {want:?} in:\n{}",
        sb.syslog_tail(4000)
    );
    assert_eq!(conventions.user_lock, UserLockNaming::UserId);
}

per_cyrus!(release_is_found_and_logged);
