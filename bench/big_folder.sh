#!/usr/bin/env bash
# bench/big_folder.sh — issue #10's client targets for one big folder (a benchmark, not
# a test; tests/scale.rs `a_big_folder_end_to_end` is its CI-sized variant).
#
# Starts a private real Cyrus 3.6 with cyrvaultd under its master and one user whose
# INBOX holds N messages (examples/big_folder.rs, MULTIAPPEND), then times, page cache
# dropped before each step, with peak RSS and CPU time (user + system) from
# /usr/bin/time:
#   full backup, no-change backup (cold, then warm), `ls` of the folder (lines/s),
#   `show` of the user, `cat` of one message (cold, median of 5), `verify`,
# and prints a markdown table beside the issue's targets.
#
# HOLD=1 keeps the sandbox and the vault after the table, for profiling: the backup
# command is written to $WORK/hold.env, and the script waits until that file is removed.
#
# Needs root. Environment: N (200000), SIZE (800 bytes), WORK (/var/tmp/cyrvault-big),
# SKIP_BUILD=1, BIN (target/release), TMPFS=1 to put the sandbox's Cyrus (not the vault)
# on a tmpfs in a private mount namespace (TMPFS_SIZE, 6g): on a busy disk Cyrus takes
# ~30 min to take in 200,000 messages, on tmpfs about one.
set -euo pipefail

if [ "${TMPFS:-0}" = 1 ] && [ -z "${BIG_FOLDER_NS:-}" ]; then
    exec unshare --mount env BIG_FOLDER_NS=1 bash "$0" "$@"
fi
if [ -n "${BIG_FOLDER_NS:-}" ]; then
    mkdir -p "${WORK:-/var/tmp/cyrvault-big}/sandbox"
    mount -t tmpfs -o "size=${TMPFS_SIZE:-6g},mode=0755" cyrvault-big "${WORK:-/var/tmp/cyrvault-big}/sandbox"
    export CYRVAULT_SANDBOX_DIR=${WORK:-/var/tmp/cyrvault-big}/sandbox
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-200000}
SIZE=${SIZE:-800}
WORK=${WORK:-/var/tmp/cyrvault-big}
BIN=${BIN:-$REPO/target/release}
RUN=$WORK/run.$$
VAULT=$RUN/vault

say() { printf '[big %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "big_folder.sh: must run as root (Cyrus sandbox)" >&2; exit 77; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$REPO" && cargo build --release --bins --example big_folder)
fi
mkdir -p "$RUN"

say "loading $N messages of ~$SIZE bytes"
coproc LOADER { "$BIN/examples/big_folder" "$RUN/sb" "$BIN/cyrvaultd" "$N" "$SIZE"; }
LOADER_IN=${LOADER[1]}
cleanup() {
    echo quit >&"$LOADER_IN" 2>/dev/null || true
    wait "$LOADER_PID" 2>/dev/null || true
    rm -rf "$RUN"
}
trap cleanup EXIT
read -r ready addr secret load_secs <&"${LOADER[0]}"
[ "$ready" = READY ] || { echo "big_folder.sh: loader said: $ready $addr" >&2; exit 70; }
say "loaded in $load_secs s"

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# timed NAME CMD...: cold; prints "wall_s rss_kb cpu_s" (CPU: user + system)
timed() {
    local name=$1
    shift
    drop
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f '%M %U %S' -o "$RUN/$name.rss" "$@" >"$RUN/$name.out"
    t1=$(date +%s.%N)
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}') $(tail -1 "$RUN/$name.rss" | awk '{printf "%s %.2f", $1, $2 + $3}')"
}
CV=("$BIN/cyrvault")
B=("${CV[@]}" backup big --server "$addr" --secret-file "$secret" --vault "$VAULT" --json)
sleep 2.1 # past Cyrus's racy window: the first run takes every folder whole
read -r full_s full_rss full_cpu < <(timed full "${B[@]}")
read -r none_s none_rss none_cpu < <(timed none "${B[@]}")
# The same once more with everything warm (server and client): what the target means.
t0=$(date +%s.%N)
/usr/bin/time -f '%M %U %S' -o "$RUN/warm.rss" "${B[@]}" >"$RUN/warm.out"
t1=$(date +%s.%N)
warm_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
warm_cpu=$(awk '{printf "%.2f", $2 + $3}' "$RUN/warm.rss")
read -r ls_s ls_rss ls_cpu < <(timed ls "${CV[@]}" ls big INBOX --vault "$VAULT")
lines=$(($(wc -l <"$RUN/ls.out") - 2))
read -r show_s show_rss show_cpu < <(timed show "${CV[@]}" show big --vault "$VAULT")
read -r verify_s verify_rss verify_cpu < <(timed verify "${CV[@]}" verify big --vault "$VAULT")
archive=$(find "$VAULT" -name '*.tar.gz' -printf '%s\n' | head -1)
mapfile -t guids < <(awk 'NR > 2 {print $2}' "$RUN/ls.out" | awk -v n="$lines" 'NR % int(n / 5 + 1) == 0' | head -5)
cats=()
for g in "${guids[@]}"; do
    read -r s _ c < <(timed cat "${CV[@]}" cat big "$g" --vault "$VAULT")
    cats+=("$s $c")
done
cat_s=$(printf '%s\n' "${cats[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
cat_cpu=$(printf '%s\n' "${cats[@]}" | sort -n | awk '{a[NR]=$2} END {print a[int((NR+1)/2)]}')
ms() { awk -v s="$1" 'BEGIN {printf "%.0f ms", s * 1000}'; }
mb() { awk -v k="$1" 'BEGIN {printf "%.0f MB", k / 1024}'; }

echo "One user, INBOX of $N messages of ~$SIZE bytes (loaded in $load_secs s), archive $((archive / 1000000)) MB; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); cold cache each step."
echo
echo "| step | measured (wall) | CPU (client, user + sys) | peak RSS (client) | target (issue 10) |"
echo "|---|---|---|---|---|"
echo "| full backup | $full_s s | $full_cpu s | $(mb "$full_rss") | RSS ≤ 100 MB per worker |"
echo "| no-change backup | $(ms "$none_s") | $(ms "$none_cpu") | $(mb "$none_rss") | ≤ 10 ms per user wall (warm server) |"
echo "| no-change backup, warm | $(ms "$warm_s") | $(ms "$warm_cpu") | | ≤ 10 ms per user wall (warm server) |"
echo "| \`ls\` of the folder ($lines lines) | $(ms "$ls_s"), $(awk -v l="$lines" -v s="$ls_s" 'BEGIN {printf "%.0f", l / s}') lines/s | $(ms "$ls_cpu") | $(mb "$ls_rss") | ≥ 100,000 lines/s |"
echo "| \`show\` of the user | $(ms "$show_s") | $(ms "$show_cpu") | $(mb "$show_rss") | ≤ 1 s |"
echo "| \`cat\` one message, cold (median of ${#cats[@]}) | $(ms "$cat_s") | $(ms "$cat_cpu") | | ≤ 50 ms |"
echo "| \`verify\` | $(ms "$verify_s"), $(awk -v b="$archive" -v s="$verify_s" 'BEGIN {printf "%.0f", b / s / 1e6}') MB/s | $(ms "$verify_cpu") | $(mb "$verify_rss") | ≥ 300 MB/s |"

if [ "${HOLD:-0}" = 1 ]; then
    printf 'VAULT=%q\nBACKUP=(%s)\n' "$VAULT" "$(printf '%q ' "${B[@]}")" >"$WORK/hold.env"
    say "holding: $WORK/hold.env (remove it to stop)"
    while [ -e "$WORK/hold.env" ]; do sleep 2; done
fi
