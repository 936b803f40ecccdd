#!/bin/sh
# FMETA lock hold of cyrvaultd under Cyrus's real master (as root, in a sandbox):
# a 10,000-message folder, and 200 x 1 KB vs 200 x 1 MB messages, 200 FMETAs each
# (header index annotations mailbox_annotations) through the service, plus 200
# opens through the spool. Prints one table row per folder, microseconds:
# STATUS lock_hold_max_us / lock_hold_p99_us and the spool's own p50/p90/p99/max.
# Debug build, like the rest of the test suite; on a loaded machine the tail
# (p99/max) is noisy, the medians are the stable part.
set -eu
cd "$(dirname "$0")/.."
exec cargo test --test tests service::lock_hold::bench_fmeta_lock_hold -- --ignored --nocapture "$@"
