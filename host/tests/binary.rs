//! The `cyrvault` binary runs. Its behaviour is tested by the workspace's integration
//! tests (../tests, which run target/<profile>/cyrvault); this target is here so that
//! `cargo test --workspace` builds the binary before those tests run (Cargo builds a
//! package's binaries for its integration tests).

#[test]
fn the_binary_prints_its_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cyrvault"))
        .arg("--version")
        .output()
        .expect("running cyrvault --version");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")),
        "cyrvault --version: {text}"
    );
}
