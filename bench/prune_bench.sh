#!/usr/bin/env bash
# bench/prune_bench.sh — the retention benchmark of issue #14 item 5.
#
# Side by side in one run, on the same mail: `cyrvault prune` of a ~1 GB archive where
# ~10 % expired, and Cyrus 3.6's own `ctl_backups -F compact` of Cyrus's own backup of
# that mailbox (sync_client -> backupd, backup_retention 1s). The engine is
# examples/prune_bench.rs (a private real Cyrus 3.6 with cyrvaultd and backupd under
# Cyrus's master); this script builds the release binaries, runs it for each mode and
# prints one markdown table:
#   scatter — every 10th message expired: nearly every 8 MiB member mixes kept and
#             expired messages, so nearly all of the archive is re-packed (the worst
#             case for a compaction that copies whole members);
#   cluster — the same share expired, appended one after another (old mail deleted in
#             bulk): the members around it are dropped, the rest copied byte for byte.
# The page cache is dropped before each timed step. Wall and CPU (user + system) time.
#
# Needs root. Not a test: `cargo test` never runs it.
#
# Environment: MB (1000), EVERY (10), MODES ("scatter cluster"), WORK
# (/var/tmp/cyrvault-prune-bench), SKIP_BUILD=1 to use target/release as it is.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
MB=${MB:-1000}
EVERY=${EVERY:-10}
MODES=${MODES:-scatter cluster}
WORK=${WORK:-/var/tmp/cyrvault-prune-bench}
BIN=$REPO/target/release

say() { printf '[prune-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "building release binaries"
    (cd "$REPO" && cargo build --release --bins --example prune_bench)
fi

mkdir -p "$WORK"
results=()
for mode in $MODES; do
    out=$WORK/$mode.env
    rm -rf "$WORK/$mode"
    say "mode $mode: $MB MB, every ${EVERY}th message expired"
    "$BIN/examples/prune_bench" "$WORK/$mode" "$BIN" "$MB" "$EVERY" "$mode" > "$out"
    rm -rf "$WORK/$mode"
    results+=("$out")
done

python3 - "${results[@]}" <<'PY'
import sys
MB = 1e6
print("| step | mode | archive | wall | CPU | MB/s (wall) | MB per CPU-s | freed | expired (raw unique) |")
print("|---|---|---|---|---|---|---|---|---|")
for path in sys.argv[1:]:
    r = {}
    for line in open(path):
        k, _, v = line.rstrip("\n").partition("=")
        r[k] = v
    f = lambda k: float(r[k])
    before, after = f("ARCHIVE_BEFORE"), f("ARCHIVE_AFTER")
    print(f"| `cyrvault prune --keep-last 1` | {r['MODE']} | {before/MB:.0f} MB | "
          f"{f('PRUNE_S'):.2f} s | {f('PRUNE_CPU_S'):.2f} s | {before/MB/f('PRUNE_S'):.0f} | "
          f"{before/MB/max(f('PRUNE_CPU_S'),1e-9):.0f} | {(before-after)/MB:.1f} MB "
          f"({(before-after)/before*100:.1f} %) | {f('PRUNE_FREED_UNIQUE')/MB:.1f} MB in "
          f"{r['PRUNE_FREED_MESSAGES']} msgs |")
    cb, ca = f("CYRUS_BEFORE"), f("CYRUS_AFTER")
    print(f"| Cyrus `ctl_backups -F compact` | {r['MODE']} | {cb/MB:.0f} MB | "
          f"{f('COMPACT_S'):.2f} s | {f('COMPACT_CPU_S'):.2f} s | {cb/MB/f('COMPACT_S'):.1f} | "
          f"{cb/MB/max(f('COMPACT_CPU_S'),1e-9):.1f} | {(cb-ca)/MB:.1f} MB | |")
    print(f"| `cyrvault verify` after | {r['MODE']} | {after/MB:.0f} MB | {f('VERIFY_S'):.2f} s | | "
          f"{after/MB/f('VERIFY_S'):.0f} | | | |")
    print(f"|  | {r['MODE']} | members: {r['MEMBERS_COPIED']} copied "
          f"({f('BYTES_COPIED')/MB:.0f} MB), {r['MEMBERS_REPACKED']} re-packed "
          f"({f('BYTES_REPACKED')/MB:.0f} MB), {r['MEMBERS_DROPPED']} dropped; "
          f"`tar -tzf` lists {r['TAR_ENTRIES']} entries; load {r['LOADAVG'].split()[0]} | | | | | | |")
PY
