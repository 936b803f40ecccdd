#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is missing,
# checks formatting and lints, then runs every test (unit tests, and integration
# tests against real Cyrus instances started on 127.0.0.1 high ports), then builds
# the Debian packages, installs them and runs the demo from the installed files
# (scripts/package-test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo build --all-targets
cargo test --all-targets -- --test-threads="${CYRVAULT_TEST_THREADS:-4}"
# packages of the build above (no release build: see scripts/package.sh)
CYRVAULT_PACKAGE_PROFILE=dev bash scripts/package-test.sh
