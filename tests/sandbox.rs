//! The test sandbox against a real Cyrus 3.6: start/stop, isolation, partitions,
//! populate, and cleanup on panic.

use cyrvault::sandbox::{Sandbox, SandboxOptions};

fn opts(hint: &str) -> SandboxOptions {
    SandboxOptions {
        name_hint: hint.into(),
        ..SandboxOptions::default()
    }
}

#[test]
fn start_and_stop() {
    let mut sb = Sandbox::start(opts("startstop")).expect("sandbox starts");
    let root = sb.root.clone();
    let pid = sb.master_pid().unwrap();
    let mut admin = sb.admin().unwrap();
    assert!(admin.has_capability("IMAP4REV1"));
    admin.logout().unwrap();
    sb.stop().unwrap();
    assert!(!cyrvault::sandbox::port_open(sb.imap_addr));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(sb);
    assert!(!root.exists());
}
