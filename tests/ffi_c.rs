//! The C ABI from C: compile tests/c/harness.c with `cc -Wall -Wextra -Werror` against
//! the committed include/cyrvault.h, link target/debug/libcyrvault.a, and run it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The freshest libcyrvault.a next to this test binary (target/debug/deps/tests-*):
/// `cargo test` rebuilds `deps/libcyrvault-<hash>.a` but only `cargo build` copies it
/// to `target/debug/libcyrvault.a`, so take whichever was written last.
pub(crate) fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe
        .parent()
        .expect("test binary lives in target/<profile>/deps");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(deps)
        .expect("reading deps dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("libcyrvault-") && name.ends_with(".a")
        })
        .collect();
    if let Some(profile_dir) = deps.parent() {
        candidates.push(profile_dir.join("libcyrvault.a"));
    }
    candidates
        .into_iter()
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .expect("libcyrvault.a is built (crate-type staticlib)")
}

/// A scratch directory removed on drop (also when the test fails).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compile the harness into a fresh scratch directory and run it in `mode`.
fn run(mode: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch =
        Scratch(std::env::temp_dir().join(format!("cyrvault-ffi-c-{}-{mode}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).expect("scratch dir");
    let harness = scratch.0.join("harness");
    let result = Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror", "-std=c11", "-D_GNU_SOURCE"])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/harness.c"))
        .arg(static_lib())
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ])
        .arg("-o")
        .arg(&harness)
        .output()
        .expect("running cc");
    assert!(
        result.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let output = Command::new(&harness)
        .arg(mode)
        .env("CYRUS_SERVICE", "cyrvault-ffi-test")
        .output()
        .expect("running the harness");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "harness {mode} failed ({}):\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn c_program_serves_a_session_through_the_abi() {
    assert_eq!(run("session"), "session ok\n");
}

#[test]
fn c_program_sees_init_failure_as_a_return_code() {
    assert_eq!(run("badinit"), "badinit ok\n");
}
