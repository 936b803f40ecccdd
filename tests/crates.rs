//! The two halves stay apart (issue 15): the service crate's normal dependencies hold
//! none of the backup host's (so `cargo build -p cyrvault` compiles none of them), and
//! the static library Cyrus links carries no SQLite, PostgreSQL or tokio symbol. The
//! size of the shipped library against the 10 MB target is enforced by
//! scripts/staticlib.sh (scripts/package.sh fails over it) and measured by
//! bench/staticlib_size.sh: its `staticlib` profile rebuilds every dependency with fat
//! LTO, ~150 s of CPU (4.4 min wall on the loaded 2-core machine), too slow for here.

use std::process::Command;

/// Crates only the backup host (or the test sandbox) may pull in.
const HOST_ONLY: &[&str] = &[
    "rusqlite",
    "libsqlite3-sys",
    "postgres",
    "tokio",
    "tar",
    "zlib-rs",
    "indicatif",
    "clap",
    "clap_mangen",
    "clap_complete",
    "rand",
    "cyrvault-host",
    "cyrvault-testkit",
];

/// Symbol name fragments of those crates (C symbols and mangled Rust paths).
const HOST_SYMBOLS: &[&str] = &[
    "sqlite3_",
    "rusqlite",
    "postgres",
    "tokio",
    "indicatif",
    "clap_builder",
    "zlib_rs",
    "cyrvault_host",
    "cyrvault_testkit",
];

#[test]
fn the_service_crate_depends_on_none_of_the_hosts_crates() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "-p",
            "cyrvault",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("running cargo tree");
    assert!(out.status.success(), "cargo tree: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let crates: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains("rustls") && crates.contains("nix"),
        "cargo tree lists the service's own dependencies: {crates:?}"
    );
    let wrong: Vec<&&str> = HOST_ONLY.iter().filter(|c| crates.contains(**c)).collect();
    assert!(
        wrong.is_empty(),
        "the service crate (what libcyrvault.a and cyrvaultd are built from) depends on \
         backup-host crates {wrong:?}; all its crates: {crates:?}"
    );
}

#[test]
fn the_static_library_has_no_host_symbols() {
    let lib = crate::ffi_c::static_lib();
    let out = Command::new("nm")
        .args(["--defined-only", "--format=posix"])
        .arg(&lib)
        .output()
        .expect("running nm (binutils)");
    assert!(out.status.success(), "nm {}: {out:?}", lib.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut defined = 0usize;
    let mut wrong = Vec::new();
    for line in text.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if line.ends_with(':') || name.ends_with(':') {
            continue; // an archive member's header line
        }
        defined += 1;
        if HOST_SYMBOLS.iter().any(|s| name.contains(s)) {
            wrong.push(name.to_string());
        }
    }
    // the entry points are there: this looked at the right library
    for entry in ["service_init", "service_main", "service_abort"] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(entry)),
            "{} does not define {entry}",
            lib.display()
        );
    }
    let size = std::fs::metadata(&lib).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}: {:.1} MB (this profile, with debuginfo), {defined} defined symbols, \
         {} from backup-host crates",
        lib.display(),
        size as f64 / 1e6,
        wrong.len()
    );
    wrong.truncate(20);
    assert!(
        wrong.is_empty(),
        "{} carries backup-host symbols, e.g. {wrong:?}",
        lib.display()
    );
}

/// The service crate builds on its own, with only its own features (Cargo unifies a
/// workspace's features, so a feature the service uses but only the host turns on
/// builds in the workspace and breaks `cargo build -p cyrvault`, the build of the
/// cyrvault-service package). `cargo check` in a target directory of its own, and
/// every crate it compiled is one of the service's.
#[test]
fn the_service_crate_builds_alone_and_compiles_no_host_crate() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/service-alone");
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check", "--offline", "-p", "cyrvault", "--lib", "--bins"])
        .args(["--message-format=json", "--target-dir"])
        .arg(&target)
        .output()
        .expect("running cargo check");
    assert!(
        out.status.success(),
        "cargo check -p cyrvault alone failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut compiled = std::collections::BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && let Some(name) = v["target"]["name"].as_str()
        {
            compiled.insert(name.replace('_', "-"));
        }
    }
    assert!(compiled.contains("cyrvault"), "{compiled:?}");
    let wrong: Vec<&&str> = HOST_ONLY
        .iter()
        .filter(|c| compiled.contains(&c.replace('_', "-")))
        .collect();
    assert!(
        wrong.is_empty(),
        "building the service alone compiled backup-host crates {wrong:?}: {compiled:?}"
    );
}
