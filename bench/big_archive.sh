#!/usr/bin/env bash
# bench/big_archive.sh — issue #10 item 4: an archive past 4 GiB, end to end on a real
# Cyrus 3.6 (a benchmark for its cost in time and disk, not a test).
#
# One user (examples/big_folder.rs) is given ROUND_MB of generated mail with random
# base64 attachments, backed up, then the mail is expunged and purged by Cyrus's own
# cyr_expire; again and again until the user's archive passes LIMIT bytes (4.5 GiB),
# so the spool stays small while the archive grows. The last round's messages stay in
# the INBOX: they lie past 4 GiB in the archive. Then: a no-change run, `verify`,
# `ls`, `cat` of each live message (its SHA-1 must be its GUID), `restore --to-eml`
# (every file's SHA-1 a live GUID, each once), and `reindex` (the catalog rebuilt from
# the archive alone, then `verify` again). Prints what it did and the timings.
#
# Needs root and ~2x LIMIT of free disk under WORK. Environment: LIMIT (4.5 GiB),
# ROUND_MB (400), MSG_SIZE (8 MB), WORK (/var/tmp/cyrvault-bigarchive), SKIP_BUILD=1,
# BIN (target/release), TMPFS=1 to put the sandbox's Cyrus (not the vault) on a tmpfs
# in a private mount namespace (TMPFS_SIZE, 3g).
set -euo pipefail

if [ "${TMPFS:-0}" = 1 ] && [ -z "${BIG_ARCHIVE_NS:-}" ]; then
    exec unshare --mount env BIG_ARCHIVE_NS=1 bash "$0" "$@"
fi
if [ -n "${BIG_ARCHIVE_NS:-}" ]; then
    mkdir -p "${WORK:-/var/tmp/cyrvault-bigarchive}/sandbox"
    mount -t tmpfs -o "size=${TMPFS_SIZE:-3g},mode=0755" cyrvault-bigarchive "${WORK:-/var/tmp/cyrvault-bigarchive}/sandbox"
    export CYRVAULT_SANDBOX_DIR=${WORK:-/var/tmp/cyrvault-bigarchive}/sandbox
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
LIMIT=${LIMIT:-$((9 << 29))}
ROUND_MB=${ROUND_MB:-400}
MSG_SIZE=${MSG_SIZE:-$((8 << 20))}
WORK=${WORK:-/var/tmp/cyrvault-bigarchive}
BIN=${BIN:-$REPO/target/release}
RUN=$WORK/run.$$
VAULT=$RUN/vault
PER_ROUND=$(((ROUND_MB << 20) / MSG_SIZE))

say() { printf '[bigarchive %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
fail() { echo "big_archive.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "big_archive.sh: must run as root (Cyrus sandbox)" >&2; exit 77; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$REPO" && cargo build --release --bins --example big_folder)
fi
mkdir -p "$RUN"
coproc LOADER { "$BIN/examples/big_folder" "$RUN/sb" "$BIN/cyrvaultd" 0; }
IN=${LOADER[1]}
OUT=${LOADER[0]}
cleanup() {
    echo quit >&"$IN" 2>/dev/null || true
    wait "$LOADER_PID" 2>/dev/null || true
    rm -rf "$RUN"
}
trap cleanup EXIT
read -r ready addr secret _ <&"$OUT"
[ "$ready" = READY ] || fail "loader said: $ready $addr"
ask() {
    echo "$*" >&"$IN"
    local r
    read -r r <&"$OUT"
    [ "$r" = OK ] || fail "loader: $* -> $r"
}
CV=("$BIN/cyrvault")
backup() {
    "${CV[@]}" backup big --server "$addr" --secret-file "$secret" --vault "$VAULT" --json >"$RUN/backup.json" ||
        fail "backup: $(cat "$RUN/backup.json")"
}
archive_size() { find "$VAULT" -name '*.tar.gz' -printf '%s\n' | head -1; }
t_start=$(date +%s)
round=0
size=0
while :; do
    round=$((round + 1))
    ask fill "$PER_ROUND" "$MSG_SIZE" "$round"
    sleep 2.1 # past Cyrus's racy window
    backup
    size=$(archive_size)
    say "round $round: archive $((size >> 20)) MiB"
    [ "$size" -lt "$LIMIT" ] || break
    ask purge
done
t_grow=$(($(date +%s) - t_start))
[ "$size" -gt $((4 << 30)) ] || fail "archive of $size bytes is not past 4 GiB"

# timed CMD...: run it (in this shell), its wall time in T.
timed() {
    local t0 rc=0
    t0=$(date +%s.%N)
    "$@" || rc=$?
    T=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f s", b - a}')
    return $rc
}
timed backup
none=$T
python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))[0]["report"]; assert r["unchanged"] and r["round_trips"] == 1, r' "$RUN/backup.json" ||
    fail "the no-change run was not one round trip"
timed "${CV[@]}" verify big --vault "$VAULT" >"$RUN/verify.out" || fail "verify: $(cat "$RUN/verify.out")"
verify=$T
timed "${CV[@]}" ls big INBOX --json --vault "$VAULT" >"$RUN/ls.json"
ls_t=$T
mapfile -t live < <(python3 -c '
import json, sys
for m in json.load(open(sys.argv[1]))["messages"]:
    if not m.get("expunged"):
        print(m["guid"])' "$RUN/ls.json")
[ "${#live[@]}" = "$PER_ROUND" ] || fail "ls lists ${#live[@]} live messages, not $PER_ROUND"
for g in "${live[@]}"; do
    got=$("${CV[@]}" cat big "$g" --vault "$VAULT" | sha1sum | cut -d' ' -f1)
    [ "$got" = "$g" ] || fail "cat $g gave $got"
done
timed "${CV[@]}" restore big INBOX --to-eml "$RUN/eml" --vault "$VAULT" >/dev/null
restore=$T
find "$RUN/eml" -type f -exec sha1sum {} + | cut -d' ' -f1 | sort >"$RUN/restored"
printf '%s\n' "${live[@]}" | sort >"$RUN/live"
cmp -s "$RUN/restored" "$RUN/live" || fail "the restored files are not the live messages"
timed "${CV[@]}" reindex big --vault "$VAULT" >/dev/null
reindex=$T
"${CV[@]}" verify big --vault "$VAULT" >/dev/null || fail "verify after reindex"

echo "Archive past 4 GiB, end to end on real Cyrus 3.6: $round rounds of $PER_ROUND messages of $((MSG_SIZE >> 20)) MiB (${t_grow} s), archive $size bytes ($(awk -v s="$size" 'BEGIN {printf "%.2f", s / 2^30}') GiB); $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| step | wall | checked |"
echo "|---|---|---|"
echo "| no-change backup | $none | unchanged, one round trip |"
echo "| \`verify\` | $verify | exit 0 |"
echo "| \`ls\` INBOX | $ls_t | the $PER_ROUND live messages (past 4 GiB) listed |"
echo "| \`cat\` each live message | | SHA-1 = GUID |"
echo "| \`restore INBOX --to-eml\` | $restore | the live messages, each once, by SHA-1 |"
echo "| \`reindex\`, then \`verify\` | $reindex | exit 0 |"
