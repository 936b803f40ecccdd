//! Issue 2's "must show" list against a running sandbox (real Cyrus 3.6.1) and the
//! real `cyrvault` binary: `inspect index|mailboxes` agree with `mbexamine`,
//! `unexpunge -l` and `ctl_mboxlist -d` on every mailbox of a populated server; an
//! index written back under Cyrus's exclusive locks is byte-identical, still served
//! unchanged by imapd and clean for `chk_cyrus`; our locks make imapd's APPEND wait;
//! damaged copies of live files give typed errors naming file and offset, never a
//! panic.

mod damage; // 4. damaged copies of live files: typed errors, never a panic
mod locks; // 3. our locks make imapd's APPEND wait
mod oracle; // 1. inspect vs mbexamine / unexpunge / ctl_mboxlist on every mailbox
mod writeback; // 2. an index written back into a live mailbox

use std::path::Path;
use std::process::{Command, Output};

use cyrvault::cyrus::config::{self, ImapdConf};
use cyrvault_testkit::sandbox::{Sandbox, SandboxOptions};
use serde_json::Value;

/// A sandbox with default options (two partitions, UUID directories).
pub fn start(hint: &str) -> Sandbox {
    Sandbox::start(SandboxOptions {
        name_hint: hint.into(),
        ..SandboxOptions::default()
    })
    .expect("sandbox starts")
}

/// The sandbox's imapd.conf through our own config parser.
pub fn conf(sb: &Sandbox) -> ImapdConf {
    config::load(Some(&sb.imapd_conf), None).unwrap()
}

/// Run the real `cyrvault` binary.
pub fn cyrvault(args: &[&str]) -> Output {
    Command::new(crate::bins::cyrvault())
        .args(args)
        .output()
        .expect("running cyrvault")
}

/// `cyrvault <args> --json`, which must succeed.
pub fn cyrvault_json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = cyrvault(&a);
    assert!(
        out.status.success(),
        "cyrvault {a:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A JSON number field that must be there.
pub fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// A JSON array of strings.
pub fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// A Cyrus tool of the sandbox with `TZ=UTC` (unexpunge prints ctime()); its raw
/// stdout (mbexamine prints cache items byte for byte, 8-bit included).
pub fn tool_utc(sb: &Sandbox, name: &str, args: &[&str]) -> Vec<u8> {
    let out = sb
        .cyrus_command(&Path::new("/usr/lib/cyrus/bin").join(name))
        .arg("-C")
        .arg(&sb.imapd_conf)
        .args(args)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
