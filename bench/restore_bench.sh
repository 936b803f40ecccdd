#!/usr/bin/env bash
# bench/restore_bench.sh — the restore benchmark of issue #12 item 4.
#
# Builds release binaries, generates the seeded corpus (../shared/corpus/gen_corpus.py
# beside the clone), and runs examples/restore_bench.rs: a private real Cyrus 3.6 (the
# "lost" server) loaded with the corpus over IMAP, backed up by `cyrvault backup --all`
# and by Cyrus's own backup (sync_client -> backupd), then restored into fresh Cyrus
# instances, page cache dropped before each step: the largest user with
# `cyrvault restore --exact`, Cyrus's own `restore -U -a`, and `cyrvault restore` over
# IMAP; then every user with `--all --exact --jobs 2`, Cyrus's `restore` two users at a
# time, and `--all` over IMAP. Every restore is checked (messages per user over IMAP).
# Prints one markdown table and writes it to $WORK/restore-table.md.
#
# Needs root (the sandboxes run Cyrus's master; dropping caches). Not a test: `cargo
# test` never runs it.
#
# Environment: USERS (20), MPU messages per user (200), SEED (1), WORK
# (/var/tmp/cyrvault-restore-bench), CORPUS (generated under WORK unless given),
# SKIP_BUILD=1 to use the release binaries as they are, BIN (target/release),
# SKIP_CYRUS=1 to leave out Cyrus's own backup and restore (quick runs; no reference),
# PERF_DIR=dir to record `perf record -a -g` of each timed step there (profiling only),
# STEPS=exact1,cyrus1,imap1,exactall,cyrusall,imapall (a subset: only those), REPEAT=n
# (each step n times, one row each), ONE_JOBS=n (`--jobs n` for the one-user restores).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
USERS=${USERS:-20}
MPU=${MPU:-200}
SEED=${SEED:-1}
WORK=${WORK:-/var/tmp/cyrvault-restore-bench}
CORPUS=${CORPUS:-$WORK/corpus-u$USERS-m$MPU-s$SEED}
GEN=$REPO/../shared/corpus/gen_corpus.py
BIN=${BIN:-$REPO/target/release}
RUN=$WORK/run.$$

say() { printf '[restore-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "restore_bench.sh: must run as root (Cyrus sandbox)" >&2; exit 77; }
mkdir -p "$WORK" "$RUN"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "building release binaries"
    (cd "$REPO" && cargo build --release --bins --example restore_bench)
fi
if [ ! -f "$CORPUS/users.txt" ]; then
    [ -f "$GEN" ] || { echo "restore_bench.sh: $GEN not found (shared/ beside the clone)" >&2; exit 66; }
    say "generating corpus: --users $USERS --messages-per-user $MPU --seed $SEED"
    python3 "$GEN" --users "$USERS" --messages-per-user "$MPU" --seed "$SEED" --out "$CORPUS" >"$RUN/gen.out"
fi
say "running (load, both backups, six restores)"
"$BIN/examples/restore_bench" "$CORPUS" "$RUN" "$BIN" | tee "$WORK/restore-table.md"
rm -rf "$RUN"
say "table in $WORK/restore-table.md"
