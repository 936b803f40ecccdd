#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is missing,
# checks formatting and lints, then runs every test (unit tests, and integration
# tests against real Cyrus instances started on 127.0.0.1 high ports), a short run of
# every fuzz target (doc/security.md), checks the shipped static library's size, then builds the Debian packages, installs them
# and runs the demo from the installed files (scripts/package-test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
cargo test --workspace --all-targets -- --test-threads="${CYRVAULT_TEST_THREADS:-4}"
# every fuzz target for a few seconds: they build, they run, nothing crashes
bash fuzz/run.sh smoke "${CYRVAULT_FUZZ_SECONDS:-10}"
# the libcyrvault.a that ships, built with its size profile: <= 10 MB stripped, the
# three entry points, unwinding (issue 15; ~2.5 min of CPU, doc/service.md)
bash scripts/staticlib.sh target/staticlib/shipped/libcyrvault.a
# packages of the build above (no release build: see scripts/package.sh)
CYRVAULT_PACKAGE_PROFILE=dev bash scripts/package-test.sh
