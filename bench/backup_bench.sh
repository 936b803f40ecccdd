#!/usr/bin/env bash
# bench/backup_bench.sh — the end-to-end benchmark of issue #4 item 6.
#
# Builds release binaries, generates the seeded corpus (../shared/corpus/gen_corpus.py
# beside the clone), starts a private real Cyrus 3.6 with cyrvaultd under Cyrus's
# master (examples/bench_load.rs, kept alive for the whole run), loads the corpus over
# IMAP (MULTIAPPEND + LITERAL+) holding back ~1 % of the messages, then times, with the
# page cache dropped before each step:
#   full backup (cyrvault backup --all), no-change incremental, incremental after
#   APPENDing the held-back 1 %, cyrvault verify --all, single-message cat from the
#   largest archive (median of several, cold), and tar|gzip -6, tar|gzip -1,
#   tar|zstd -3, plain tar over the same spool (the sandbox's partitions + config dir),
#   and restic and borg (full, then nothing changed) when they are installed
#   (SKIP_TOOLS=1 skips them).
# Prints one markdown table (with the reference figures of
# ../shared/performance-baseline.md) and writes it to $WORK/table.md.
#
# Needs root (the sandbox runs Cyrus's master, and dropping caches). Not a test:
# `cargo test` never runs it.
#
# `backup_bench.sh --table RESULTS_ENV` prints the table of an earlier run again.
#
# Environment: USERS (20), MPU messages per user (200), SEED (1), WORK
# (/var/tmp/cyrvault-bench), CORPUS (generated under WORK unless given), CAT_RUNS (7),
# SKIP_BUILD=1 to use the release binaries as they are, BIN (target/release) to use others,
# KEEP=1 to keep the vault ($WORK/run.PID/vault) afterwards.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
USERS=${USERS:-20}
MPU=${MPU:-200}
SEED=${SEED:-1}
WORK=${WORK:-/var/tmp/cyrvault-bench}
CORPUS=${CORPUS:-$WORK/corpus-u$USERS-m$MPU-s$SEED}
CAT_RUNS=${CAT_RUNS:-7}
GEN=${GEN:-$REPO/../shared/corpus/gen_corpus.py}
BIN=${BIN:-$REPO/target/release}
RUN=$WORK/run.$$
VAULT=$RUN/vault
RES=$RUN/results.env

say() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# render_table RESULTS_ENV: the markdown table from the key=value results of a run.
render_table() {
    python3 - "$1" <<'PY'
import sys
r = {}
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").partition("=")
    r[k] = v.strip('"')
f = lambda k: float(r[k])
MB = 1e6
# performance-baseline.md: its two corpora; other corpora get no reference column.
REFS = {
    ("20", "200", "1"): {
        "full": "Cyrus backup full: 111 s, 7.5 MB/s, 603 MB",
        "nochange": "3.0 s (1.8 s in one connection)",
        "incr": "4.0 s",
        "verify": "`ctl_backups verify`: 41 s, 15 MB/s",
        "cat": "`cyr_backup` show one message: 0.5–0.6 s",
        "gz6": "74 s, 12 MB/s, 643 MB",
        "gz1": "63 s, 14 MB/s, 657 MB",
        "zstd": "5.2 s, 179 MB/s, 641 MB",
        "tar": "2.1 s, ~400 MB/s, 874 MB",
    },
    ("100", "100", "42"): {
        "full": "Cyrus backup full: 281 s, 7.3 MB/s",
        "nochange": "9.9 s (5.1 s in one connection)",
        "incr": "13.4 s",
        "verify": "`ctl_backups verify`: 111 s, 14 MB/s",
        "cat": "`cyr_backup` show one message: 0.4–0.6 s",
        "gz6": "152 s, 13 MB/s, 1.58 GB",
        "gz1": "125 s, 17.6 MB/s, 1.61 GB",
        "zstd": "11.8 s, 178 MB/s, 1.57 GB",
        "tar": "4.9 s, ~420 MB/s",
    },
}
users, mpu, seed = r["USERS"], r["MPU"], r["SEED"]
ref = REFS.get((users, mpu, seed), {})
R = lambda k: ref.get(k, "")
total_msgs = int(r["LOADED_MSGS"]) + int(r["HELD_MSGS"])
tar_in = f("tar_cat_SIZE")

def size(n):
    return f"{n / MB:.0f} MB" if n >= 10 * MB else f"{n / MB:.1f} MB" if n >= MB / 10 else f"{n / 1e3:.0f} kB"

def row(step, wall, mb=None, msgs=None, out=None, ref="", cpu=None):
    cols = [step,
            (f"{wall:.2f} s" if wall >= 1 else f"{wall*1000:.0f} ms"),
            (f"{mb / wall:.1f}" if mb else ""),
            (f"{msgs / wall:.0f}" if msgs else ""),
            (size(out) if out is not None else ""),
            (f"{cpu:.1f} s" if cpu is not None else ""),
            ref]
    print("| " + " | ".join(cols) + " |")

print(f"Corpus: `gen_corpus.py --users {users} --messages-per-user {mpu} --seed {seed}`: "
      f"{r['CORPUS_FILES']} message files, {f('CORPUS_BYTES')/MB:.0f} MB; loaded over IMAP "
      f"{r['LOADED_MSGS']} + {r['HELD_MSGS']} held back for the +1 % step "
      f"({f('LOADED_BYTES')/MB:.0f} MB + {f('HELD_BYTES')/MB:.1f} MB) in {r['LOAD_SECS']} s. "
      f"Spool (2 partitions + config dir): {f('SPOOL_BYTES')/MB:.0f} MB on disk, "
      f"{tar_in/MB:.0f} MB as a tar stream. Page cache dropped before each step: {r['DROP_CACHES']}.")
print()
print("| step | wall | MB/s | messages/s | output | CPU (client) | reference (Cyrus 3.6 / tools, performance-baseline.md) |")
print("|---|---|---|---|---|---|---|")
row(f"`cyrvault backup --all`, full ({int(f('full_MSGS'))} messages, {f('full_BYTES')/MB:.0f} MB fetched after "
    "per-user dedup)", f("full_WALL"), f("LOADED_BYTES") / MB, f("LOADED_MSGS"),
    f("ARCHIVE_BYTES_FULL"), R("full"), f("full_CPU"))
row("no-change incremental", f("nochange_WALL"), None, None, f("nochange_WRITTEN"),
    R("nochange"), f("nochange_CPU"))
row(f"incremental after +1 % ({int(f('incr_MSGS'))} msgs, {f('incr_BYTES')/MB:.1f} MB)", f("incr_WALL"),
    f("incr_BYTES") / MB, f("incr_MSGS"), f("incr_WRITTEN"), R("incr"), f("incr_CPU"))
row("`cyrvault verify --all`", f("verify_WALL"), f("ARCHIVE_BYTES") / MB, total_msgs, None,
    R("verify"), f("verify_CPU"))
print(f"| `cyrvault cat` one message, largest archive ({f('LARGEST_BYTES')/MB:.0f} MB), cold, median of {r['CAT_N']} "
      f"| {f('CAT_MS_MEDIAN'):.0f} ms (min {f('CAT_MS_MIN'):.0f}, max {f('CAT_MS_MAX'):.0f}; warm {f('CAT_WARM_MS_MEDIAN'):.0f} ms) "
      f"| | | | | {R('cat')} |")
row("`tar -cf - SPOOL \\| gzip -6`", f("tar_gzip6_WALL"), tar_in / MB, total_msgs, f("tar_gzip6_SIZE"),
    R("gz6"), f("tar_gzip6_CPU"))
row("`tar -cf - SPOOL \\| gzip -1`", f("tar_gzip1_WALL"), tar_in / MB, total_msgs, f("tar_gzip1_SIZE"),
    R("gz1"), f("tar_gzip1_CPU"))
row("`tar -cf - SPOOL \\| zstd -3` (one thread)", f("tar_zstd3_WALL"), tar_in / MB, total_msgs,
    f("tar_zstd3_SIZE"), R("zstd"), f("tar_zstd3_CPU"))
row("`tar -cf - SPOOL` (no compression)", f("tar_cat_WALL"), tar_in / MB, total_msgs, tar_in,
    R("tar"), f("tar_cat_CPU"))
for tool, label, ref_full, ref_none in (
        ("restic", "restic 0.14 (zstd auto, encrypted)", "7.37 s", "1.10 s"),
        ("borg", "borg 1.2 (`-e none`, lz4)", "7.13 s", "1.16 s")):
    if f"{tool}_full_WALL" in r:
        refs = (f"performance-baseline.md (20 users): full {ref_full}, no change {ref_none}"
                if (users, mpu, seed) == ("20", "200", "1") else "")
        row(f"{label} of the spool, full", f(f"{tool}_full_WALL"), tar_in / MB, total_msgs,
            f(f"{tool}_SIZE"), refs, f(f"{tool}_full_CPU"))
        row(f"{label}, nothing changed", f(f"{tool}_nochange_WALL"), None, None, None, "",
            f(f"{tool}_nochange_CPU"))
print()
print(f"Sizes: {r['ARCHIVES']} archives, {f('ARCHIVE_BYTES')/MB:.1f} MB in total after the +1 % run "
      f"({f('ARCHIVE_BYTES_FULL')/MB:.1f} MB after the full run) plus {f('CATALOG_BYTES')/MB:.1f} MB of catalogs; "
      f"`tar | gzip -6` of the spool: {f('tar_gzip6_SIZE')/MB:.1f} MB "
      f"(archives / tar.gz = {f('ARCHIVE_BYTES_FULL') / f('tar_gzip6_SIZE'):.3f}).")
ratio = f("tar_gzip6_WALL") / f("full_WALL")
print(f"Full backup vs `tar | gzip -6` on the same spool in the same run: "
      f"{f('full_WALL'):.1f} s vs {f('tar_gzip6_WALL'):.1f} s, i.e. the full backup's throughput is "
      f"**{ratio:.2f}×** that of `tar | gzip -6` (same bytes, so the ratio of wall times). "
      f"No-change incremental = {100 * f('nochange_WALL') / f('full_WALL'):.2f} % of the full run (goal ≤ 2 %).")
print(f"The CPU column is the timed command's own (user + sys, with its children); for the backups "
      f"that is the client, not cyrvaultd. Load average before / after the timed steps: "
      f"{r['LOAD_BEFORE']} / {r['LOAD_AFTER']}.")
PY
}

if [ "${1:-}" = --table ]; then
    render_table "$2"
    exit 0
fi

[ "$(id -u)" = 0 ] || { echo "backup_bench.sh: must run as root (Cyrus sandbox)" >&2; exit 77; }
mkdir -p "$WORK"
rm -rf "$RUN"
mkdir -p "$RUN"
: >"$RES"
rec() { printf '%s=%s\n' "$1" "$2" >>"$RES"; }
rec MPU "$MPU"
rec SEED "$SEED"

# --- 1. release binaries -------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "building release binaries"
    (cd "$REPO" && cargo build --release --bins --example bench_load)
fi

# --- 2. corpus -----------------------------------------------------------------------
if [ ! -f "$CORPUS/users.txt" ]; then
    [ -f "$GEN" ] || { echo "backup_bench.sh: $GEN not found (shared/ beside the clone)" >&2; exit 66; }
    say "generating corpus: --users $USERS --messages-per-user $MPU --seed $SEED"
    python3 "$GEN" --users "$USERS" --messages-per-user "$MPU" --seed "$SEED" --out "$CORPUS" >"$RUN/gen.out"
fi
rec CORPUS_FILES "$(find "$CORPUS" -name '*.eml' | wc -l)"
rec CORPUS_BYTES "$(find "$CORPUS" -name '*.eml' -printf '%s\n' | awk '{s+=$1} END {print s}')"

# --- 3. sandbox + load ---------------------------------------------------------------
say "starting the sandbox and loading the corpus over IMAP"
coproc LOADER { "$BIN/examples/bench_load" "$CORPUS" "$RUN/sb" "$BIN/cyrvaultd" 100; }
LOADER_IN=${LOADER[1]}
LOADER_OUT=${LOADER[0]}
cleanup() {
    if [ -n "${LOADER_PID:-}" ]; then
        echo quit >&"$LOADER_IN" 2>/dev/null || true
        wait "$LOADER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
read -r line <&"$LOADER_OUT"
[ "$line" = READY ] || { echo "backup_bench.sh: loader said: $line" >&2; exit 70; }
# shellcheck disable=SC1091
. "$RUN/sb/sandbox.env"
cat "$RUN/sb/sandbox.env" >>"$RES"
say "loaded $LOADED_MSGS messages ($LOADED_BYTES bytes) in $LOAD_SECS s; $HELD_MSGS held back"

DROP=yes
drop_caches() {
    sync
    if ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then DROP=no; fi
}

# timed NAME CMD...: cold cache, wall + CPU (user+sys of the command and its children).
timed() {
    local name=$1
    shift
    drop_caches
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f '%U %S' -o "$RUN/$name.cpu" "$@"
    t1=$(date +%s.%N)
    rec "${name}_WALL" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')"
    rec "${name}_CPU" "$(awk '{print $1 + $2}' "$RUN/$name.cpu")"
}

BACKUP=("$BIN/cyrvault" backup --all --server "$ADDR" --secret-file "$SECRET_FILE" --vault "$VAULT" --json)

# Sum a numeric field over every object of a JSON document.
jsum() {
    python3 -c '
import json, sys
key = sys.argv[1]
def walk(v):
    if isinstance(v, dict):
        return sum((x if k == key and isinstance(x, (int, float)) else walk(x)) for k, x in v.items())
    if isinstance(v, list):
        return sum(walk(x) for x in v)
    return 0
print(walk(json.load(open(sys.argv[2]))))' "$1" "$2"
}

record_backup() {
    local name=$1
    rec "${name}_MSGS" "$(jsum messages_fetched "$RUN/$name.json")"
    rec "${name}_BYTES" "$(jsum bytes_fetched "$RUN/$name.json")"
    rec "${name}_META" "$(jsum meta_bytes_fetched "$RUN/$name.json")"
    rec "${name}_WRITTEN" "$(jsum bytes_written "$RUN/$name.json")"
}

# --- 4. timed steps ------------------------------------------------------------------
rec LOAD_BEFORE "$(cut -d' ' -f1-3 /proc/loadavg)"
say "full backup"
timed full "${BACKUP[@]}" </dev/null >"$RUN/full.json"
record_backup full
rec ARCHIVE_BYTES_FULL "$(find "$VAULT" -name '*.tar.gz' -printf '%s\n' | awk '{s+=$1} END {print s}')"

say "no-change incremental"
timed nochange "${BACKUP[@]}" </dev/null >"$RUN/nochange.json"
record_backup nochange

say "appending the held-back messages"
echo append-held >&"$LOADER_IN"
read -r line <&"$LOADER_OUT"
say "$line"
say "incremental after +1 %"
timed incr "${BACKUP[@]}" </dev/null >"$RUN/incr.json"
record_backup incr
rec ARCHIVE_BYTES "$(find "$VAULT" -name '*.tar.gz' -printf '%s\n' | awk '{s+=$1} END {print s}')"
rec ARCHIVES "$(find "$VAULT" -name '*.tar.gz' | wc -l)"
rec CATALOG_BYTES "$(find "$VAULT" -name '*.catalog.sqlite*' -printf '%s\n' | awk '{s+=$1} END {print s}')"

say "verify --all"
timed verify "$BIN/cyrvault" verify --all --vault "$VAULT" --json </dev/null >"$RUN/verify.json"

say "single-message cat from the largest archive"
LARGEST=$(find "$VAULT" -name '*.tar.gz' -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
rec LARGEST_BYTES "$(stat -c %s "$LARGEST")"
"$BIN/cyrvault" ls "$LARGEST" INBOX --vault "$VAULT" --json >"$RUN/ls.json"
mapfile -t GUIDS < <(python3 -c '
import json, re, sys
text = open(sys.argv[1]).read()
g = sorted(set(re.findall(r"\b[0-9a-f]{40}\b", text)))
n = int(sys.argv[2])
step = max(1, len(g) // n)
print("\n".join(g[::step][:n]))' "$RUN/ls.json" "$CAT_RUNS")
[ "${#GUIDS[@]}" -gt 0 ] || { echo "backup_bench.sh: no GUID in $RUN/ls.json" >&2; exit 70; }
: >"$RUN/cat.ms"
for g in "${GUIDS[@]}"; do
    drop_caches
    t0=$(date +%s%N)
    "$BIN/cyrvault" cat "$LARGEST" "$g" --vault "$VAULT" >"$RUN/cat.out"
    t1=$(date +%s%N)
    echo "$(((t1 - t0) / 1000)) $(stat -c %s "$RUN/cat.out")" >>"$RUN/cat.ms"
done
rec CAT_MS_MEDIAN "$(sort -n "$RUN/cat.ms" | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}')"
rec CAT_MS_MIN "$(sort -n "$RUN/cat.ms" | awk 'NR==1 {printf "%.1f", $1/1000}')"
rec CAT_MS_MAX "$(sort -n "$RUN/cat.ms" | awk 'END {printf "%.1f", $1/1000}')"
rec CAT_N "${#GUIDS[@]}"
# Warm: the same messages again without dropping the cache.
: >"$RUN/catwarm.ms"
for g in "${GUIDS[@]}"; do
    t0=$(date +%s%N)
    "$BIN/cyrvault" cat "$LARGEST" "$g" --vault "$VAULT" >/dev/null
    t1=$(date +%s%N)
    echo "$(((t1 - t0) / 1000))" >>"$RUN/catwarm.ms"
done
rec CAT_WARM_MS_MEDIAN "$(sort -n "$RUN/catwarm.ms" | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}')"

# The same spool through tar: partitions + config dir, as the baseline did.
SPOOL=$SPOOL_DIRS
rec SPOOL_BYTES "$(du -sb $SPOOL | awk '{s+=$1} END {print s}')"
for name in gzip6 gzip1 zstd3 cat; do
    case $name in
    gzip6) c="gzip -6" ;;
    gzip1) c="gzip -1" ;;
    zstd3) c="zstd -3 -T1" ;;
    cat) c="cat" ;;
    esac
    name=tar_$name
    say "tar | $c"
    timed "$name" bash -c "tar -cf - $SPOOL 2>/dev/null | $c | wc -c >'$RUN/$name.size'"
    rec "${name}_SIZE" "$(cat "$RUN/$name.size")"
done
# General-purpose backup tools on the same spool, when installed (as in
# performance-baseline.md: restic with its defaults, borg unencrypted with lz4), full
# then nothing changed, their caches kept between the two like cyrvault's catalog.
if command -v restic >/dev/null && [ "${SKIP_TOOLS:-0}" != 1 ]; then
    export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$RUN/restic-cache
    restic init -q --repo "$RUN/restic" >/dev/null
    say "restic full / no change"
    timed restic_full bash -c "restic -q --repo '$RUN/restic' backup $SPOOL >/dev/null"
    timed restic_nochange bash -c "restic -q --repo '$RUN/restic' backup $SPOOL >/dev/null"
    rec restic_SIZE "$(du -sb "$RUN/restic" | cut -f1)"
    rm -rf "$RUN/restic" "$RUN/restic-cache"
fi
if command -v borg >/dev/null && [ "${SKIP_TOOLS:-0}" != 1 ]; then
    export BORG_BASE_DIR=$RUN/borg-base BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
    borg init -e none "$RUN/borg" >/dev/null 2>&1
    say "borg full / no change"
    timed borg_full bash -c "borg create --compression lz4 '$RUN/borg::full' $SPOOL"
    timed borg_nochange bash -c "borg create --compression lz4 '$RUN/borg::again' $SPOOL"
    rec borg_SIZE "$(du -sb "$RUN/borg" | cut -f1)"
    rm -rf "$RUN/borg" "$RUN/borg-base"
fi
rec LOAD_AFTER "$(cut -d' ' -f1-3 /proc/loadavg)"
rec DROP_CACHES "$DROP"

# --- 5. the table --------------------------------------------------------------------
render_table "$RES" >"$RUN/table.md"
cat "$RUN/table.md"
cp "$RUN/table.md" "$WORK/table.md"
cp "$RES" "$WORK/results.env"
if [ "${KEEP:-0}" != 1 ]; then
    rm -rf "$VAULT"
fi
say "results in $RUN (table: $WORK/table.md; KEEP=1 keeps the vault)"
