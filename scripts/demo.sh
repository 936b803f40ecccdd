#!/usr/bin/env bash
# The main job end to end on a local sandbox: a private real Cyrus on 127.0.0.1
# (started by the demo, stopped at the end), sample mail, cyrvaultd under Cyrus's
# own master, then what the cyrvault command does with it. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --bins --examples
CYRVAULT_BIN_DIR="$PWD/target/release" exec target/release/examples/demo "$@"
