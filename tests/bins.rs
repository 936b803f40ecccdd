//! Where the tests find the binaries. `cyrvaultd` is this package's own
//! (`CARGO_BIN_EXE_cyrvaultd`); `cyrvault` belongs to the backup host's package
//! (host/), and Cargo gives a test only its own package's binaries, so it is taken from
//! the shared target directory beside this test's executable (target/<profile>/),
//! where `cargo build` and `cargo test --workspace` put it. A missing binary, or one
//! older than the host's sources, fails the test with what to run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

/// target/<profile>/cyrvault, checked to exist and to be newer than host/src.
pub fn cyrvault() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/tests-<hash> -> target/<profile>/cyrvault
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from target/<profile>/deps")
            .join("cyrvault");
        let built = match std::fs::metadata(&bin).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(e) => panic!(
                "{}: {e}: build the backup host's binary first (cargo build, or run the \
                 tests with cargo test --workspace)",
                bin.display()
            ),
        };
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("host/src");
        if let Some((newest, path)) = newest_file(&src)
            && newest > built
        {
            panic!(
                "{} is older than {}: rebuild it (cargo build, or cargo test --workspace)",
                bin.display(),
                path.display()
            );
        }
        bin
    })
}

/// The most recently modified file under `dir`, with its time.
fn newest_file(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let found = if path.is_dir() {
            newest_file(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path))
        };
        if let Some((t, p)) = found
            && best.as_ref().is_none_or(|(b, _)| t > *b)
        {
            best = Some((t, p));
        }
    }
    best
}
