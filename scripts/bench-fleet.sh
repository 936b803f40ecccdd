#!/usr/bin/env bash
# The fleet benchmark (doc/performance.md, "Fleet"): three sandbox Cyrus masters with
# cyrvaultd, two partitions (= two drive units) each, N users per server, backed up
# from scratch by `cyrvault run` with 1, 2, 4 and 12 worker processes. Prints a
# Markdown table: users/hour and MB/s (message bytes fetched per wall second).
#
#   FLEET_BENCH_USERS=100 FLEET_BENCH_MESSAGES=20 FLEET_BENCH_SIZE=8000 scripts/bench-fleet.sh
#
# Debug build (the project's rule on shared machines); add --release to the cargo
# line for release numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
# the test runs target/debug/cyrvault, the backup host's binary: build the workspace first
cargo build --quiet
cargo test --test tests fleet::bench_fleet -- --ignored --nocapture --test-threads=1 2>&1 \
  | grep -E '^\|'
