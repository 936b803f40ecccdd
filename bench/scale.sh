#!/usr/bin/env bash
# bench/scale.sh — production scale (issue #10 item 5). A benchmark, not a test.
#
# Builds release binaries, starts a private real Cyrus 3.6 with cyrvaultd under its
# master (examples/scale_load.rs keeps it alive and answers commands), and fills it
# with Cyrus's own tools only: USERS real users with mail over IMAP (MULTIAPPEND),
# one user with a BIG_FOLDER_MSGS-message INBOX, then 20,000 and 200,000 mailboxes
# in mailboxes.db by `ctl_mboxlist -u` (bulk users x 10 mailboxes). It measures, each
# figure printed beside the issue's target:
#   full backup of the real users (and `tar | gzip -6` of the same spool, same run);
#   no-change incremental per user on the server with only the real users, then with
#   20,000 and 200,000 mailboxes (wall per user; cyrvaultd CPU per user and peak
#   child RSS from its syslog session lines; FMETA time with no list-cache hit);
#   +1 % new mail on HOLD_USERS users; FMETA/FDATA of the big folder through the
#   protocol and its backup, ls, show, cat; verify; with --big-archive BYTES, a
#   user whose archive passes 4 GiB (backup, verify, ls, cat, restore to files).
# Prints one markdown table and writes it to $WORK/scale-table.md.
#
# Needs root (Cyrus's master; dropping caches). Environment: USERS (100), MPU
# messages per user (40), SEED (1), HOLD_USERS (20), BIG_FOLDER_MSGS (200000; 0
# skips it), STEPS bulk users per step (2000 18000: 20,000 then 200,000
# mailboxes; empty skips them), FMETA_N (200), CYRVAULTD (the service binary to
# measure; default $BIN/cyrvaultd),
# WORK (/var/tmp/cyrvault-scale), SANDBOX_DIR (/dev/shm: Cyrus fsyncs every
# mailboxes.db transaction and every APPEND; on tmpfs the 200,000 undumps and the
# big folder load take minutes, not hours), SKIP_BUILD=1, BIN (target/release).
# Without SANDBOX_DIR the script re-runs itself in a private mount namespace
# (`unshare --mount`) with a tmpfs of its own under $WORK: nothing changes in the
# machine's mounts, and the tmpfs goes away with the run. (The sandbox cannot live
# under /dev/shm: its syslog capture mounts a private /dev.) With --big-archive,
# give SANDBOX_DIR on a disk: that user needs ~6 GB.
#
# `scale.sh --table RESULTS_ENV` prints the table of an earlier run again.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
USERS=${USERS:-100}
MPU=${MPU:-40}
SEED=${SEED:-1}
HOLD_USERS=${HOLD_USERS:-20}
BIG_FOLDER_MSGS=${BIG_FOLDER_MSGS:-200000}
STEPS=${STEPS:-"2000 18000"}
WORK=${WORK:-/var/tmp/cyrvault-scale}
SANDBOX_DIR=${SANDBOX_DIR:-}
BIN=${BIN:-$REPO/target/release}
BIG_ARCHIVE=0
RUN=$WORK/run.$$
VAULT=$RUN/vault
RES=$RUN/results.env

say() { printf '[scale %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

render_table() {
    python3 - "$1" <<'PY'
import sys
r = {}
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").partition("=")
    r[k] = v.strip('"')
g = lambda k, d=None: float(r[k]) if k in r and r[k] not in ("", "n/a") else d
MB = 1e6
rows = []
def row(what, measured, target, ok=None, client=False):
    mark = "" if ok is None else (" ✔" if ok else " ✘")
    note = " (client work pending)" if client and ok is False else ""
    rows.append(f"| {what} | {measured}{mark}{note} | {target} |")
def ms(x):
    return "n/a" if x is None else (f"{x:.1f} ms" if x < 1000 else f"{x/1000:.2f} s")

users = int(r["USERS"])
steps = [s for s in r.get("STEPS_DONE", "").split() if s]
per_user = {s: g(f"nochange_{s}_WALL") * 1000 / users for s in ["0"] + steps if g(f"nochange_{s}_WALL")}
cpu_user = {s: (lambda c: None if c is None else c / 1000 / users)(g(f"nochange_{s}_SVC_CPU_US"))
            for s in ["0"] + steps}
last = steps[-1] if steps else "0"
mbx = lambda s: f"{int(r.get('MAILBOXES_' + s, 0)):,}"
# The issue's own measurement, from outside on real Cyrus 3.6 (before this work).
issue_ref = {"0": "issue #10 before: 20 ms at 50 mailboxes"}
if steps:
    issue_ref[steps[0]] = "issue #10 before: 457 ms at 20,050 mailboxes"
for s in ["0"] + steps:
    target = "; ".join(t for t in ["≤ 10 ms" if s == last else "", issue_ref.get(s, "")] if t)
    row(f"no-change incremental per user, {mbx(s)} mailboxes on the server ({users} users)",
        ms(per_user.get(s)), target, per_user.get(s, 1e9) <= 10 if s == last else None,
        client=s == last)
if last != "0" and "0" in per_user and last in per_user:
    ratio = per_user[last] / per_user["0"]
    row(f"… on {mbx(last)} mailboxes vs on the server with only the {users} users", f"{ratio:.2f}×",
        "≤ 1.5×", ratio <= 1.5)
for s in ["0"] + steps:
    c = cpu_user[s]
    row(f"cyrvaultd CPU per unchanged user, {mbx(s)} mailboxes", "n/a" if c is None else f"{c:.2f} ms",
        "≤ 2 ms", None if c is None else c <= 2)
for s in ["0"] + steps:
    f = g(f"fmeta_{s}_MEDIAN")
    row(f"FMETA of one folder (median of {r.get('FMETA_N','')}, no list-cache hit), {mbx(s)} mailboxes",
        f"{ms(f)} (min {ms(g(f'fmeta_{s}_MIN'))}, max {ms(g(f'fmeta_{s}_MAX'))})",
        "was 142 ms at 20,000 (issue #10)")
for s in ["0"] + steps:
    kb = g(f"nochange_{s}_SVC_RSS_KB")
    if kb:
        row(f"cyrvaultd child peak RSS, no-change run, {mbx(s)} mailboxes", f"{kb/1024:.1f} MB", "≤ 64 MB", kb <= 64 * 1024)
if g("incr_WALL"):
    row(f"+1 % new mail on {r['HOLD_USERS']} users ({r.get('HELD_MSGS')} messages), incremental of those users",
        ms(g("incr_WALL") * 1000), "≤ 0.5 s", g("incr_WALL") <= 0.5, client=True)
full_mb = g("LOADED_BYTES") / MB / g("full_WALL")
gz_mb = g("tar_SIZE_IN") / MB / g("tar_gzip6_WALL")
row(f"full backup of the {users} users ({g('LOADED_BYTES')/MB:.0f} MB of mail)", f"{full_mb:.1f} MB/s "
    f"({g('full_WALL'):.1f} s; client CPU {g('full_CPU'):.1f} s)", "≥ 100 MB/s", full_mb >= 100, client=True)
row("`tar | gzip -6` of the same spool, same run", f"{gz_mb:.1f} MB/s ({g('tar_gzip6_WALL'):.1f} s, "
    f"{g('tar_gzip6_SIZE')/MB:.0f} MB)", "(reference)")
size_ratio = g("ARCHIVE_BYTES_FULL") / g("tar_gzip6_SIZE")
row("archive size / `tar | gzip -6` size", f"{size_ratio:.3f}", "≤ 1.0", size_ratio <= 1.0)
if g("verify_WALL"):
    v = g("VERIFY_BYTES") / MB / g("verify_WALL")
    row(f"`cyrvault verify --all` ({g('VERIFY_BYTES')/MB:.0f} MB of archives)", f"{v:.1f} MB/s", "≥ 300 MB/s", v >= 300, client=True)
if g("bf_fmeta_MS"):
    row(f"FMETA of the {int(g('BIG_MSGS')):,}-message folder (index {g('BIG_INDEX_BYTES', 0)/MB:.1f} MB)",
        ms(g("bf_fmeta_MS")), "")
    row(f"FDATA of all of it, {int(g('bf_BATCHES'))} batches of 1024", f"{g('bf_FDATA_SECS'):.1f} s "
        f"({g('bf_FDATA_MSGS')/g('bf_FDATA_SECS'):.0f} messages/s)", "")
    row("cyrvaultd child peak RSS, FMETA + FDATA of that folder", f"{g('bf_SVC_RSS_KB')/1024:.1f} MB", "≤ 64 MB",
        g("bf_SVC_RSS_KB") <= 64 * 1024)
    if g("bf_SVC_CPU_US") is not None:
        row("cyrvaultd CPU for that FMETA + FDATA", f"{g('bf_SVC_CPU_US')/1e6:.1f} s", "")
if g("bfbackup_WALL"):
    row(f"`cyrvault backup` of that user (full)", f"{g('bfbackup_WALL'):.1f} s, client peak RSS "
        f"{g('bfbackup_RSS_KB')/1024:.0f} MB", "client ≤ 100 MB", g("bfbackup_RSS_KB") <= 100 * 1024, client=True)
    row("cyrvaultd child peak RSS during that backup", f"{g('bfbackup_SVC_RSS_KB', 0)/1024:.1f} MB", "≤ 64 MB",
        g("bfbackup_SVC_RSS_KB", 0) <= 64 * 1024)
if g("ls_WALL"):
    lps = g("LS_LINES") / g("ls_WALL")
    row(f"`cyrvault ls` of that folder ({int(g('LS_LINES')):,} lines)", f"{lps:,.0f} lines/s", "≥ 100,000 lines/s",
        lps >= 100000, client=True)
if g("show_WALL"):
    row("`cyrvault show` of that user", ms(g("show_WALL") * 1000), "≤ 1 s", g("show_WALL") <= 1, client=True)
if g("cat_MS"):
    row("`cyrvault cat` of one message of that user, cold", ms(g("cat_MS")), "≤ 50 ms", g("cat_MS") <= 50, client=True)
if g("BA_ARCHIVE_BYTES"):
    row(f"user whose archive passes 4 GiB: archive", f"{g('BA_ARCHIVE_BYTES')/2**30:.2f} GiB "
        f"({g('BA_MSGS'):.0f} messages, {g('BA_BYTES')/2**30:.2f} GiB of mail)", "> 4 GiB", g("BA_ARCHIVE_BYTES") > 4 * 2**30)
    for step in ["babackup", "baverify", "bals", "bacat", "barestore"]:
        if step + "_WALL" in r:
            okv = r.get(step + "_RC") == "0"
            row(f"… `{r.get(step + '_WHAT', step)}`", f"{g(step + '_WALL'):.1f} s, exit {r.get(step + '_RC')}, "
                f"client peak RSS {g(step + '_RSS_KB', 0)/1024:.0f} MB", "works end to end", okv, client=True)
db_sizes = ", ".join(f"{g('DB_' + s, 0) / MB:.1f} MB" for s in ["0"] + steps)
print(f"Server: {users} users × {r['MPU']} messages (seed {r['SEED']}: {g('LOADED_MSGS'):.0f} messages, "
      f"{g('LOADED_BYTES')/MB:.0f} MB, loaded over IMAP in {r['LOAD_SECS']} s), a {int(g('BIG_MSGS', 0)):,}-message "
      f"folder (loaded in {r.get('BIG_SECS', 'n/a')} s), then bulk mailboxes by `ctl_mboxlist -u` "
      f"({', '.join(mbx(s) + ' mailboxes in ' + r.get('undump_' + s + '_SECS', '?') + ' s' for s in steps)}). "
      f"mailboxes.db: {db_sizes}. "
      f"Sandbox on {r.get('SANDBOX_DIR')}; load average before / after: {r.get('LOAD_BEFORE')} / {r.get('LOAD_AFTER')}.")
print()
print("| what | measured | target |")
print("|---|---|---|")
print("\n".join(rows))
PY
}

if [ "${1:-}" = --table ]; then
    render_table "$2"
    exit 0
fi
if [ "${1:-}" = --big-archive ]; then
    BIG_ARCHIVE=${2:-6000000000}
fi

[ "$(id -u)" = 0 ] || { echo "scale.sh: must run as root (Cyrus sandbox)" >&2; exit 77; }
if [ -z "$SANDBOX_DIR" ]; then
    if [ "${SCALE_PRIVATE_TMPFS:-}" != 1 ]; then
        exec unshare --mount --propagation private -- env SCALE_PRIVATE_TMPFS=1 bash "$0" "$@"
    fi
    SANDBOX_DIR=$WORK/tmpfs.$$
    mkdir -p "$SANDBOX_DIR"
    mount -t tmpfs -o size=12g,mode=0755 cyrvault-scale "$SANDBOX_DIR"
fi
mkdir -p "$WORK" "$RUN"
: >"$RES"
rec() { printf '%s=%s\n' "$1" "$2" >>"$RES"; }
rec USERS "$USERS"
rec MPU "$MPU"
rec SEED "$SEED"
rec HOLD_USERS "$HOLD_USERS"
rec SANDBOX_DIR "$SANDBOX_DIR"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "building release binaries"
    (cd "$REPO" && cargo build --release --bins --example scale_load)
fi

say "starting the sandbox under $SANDBOX_DIR"
export CYRVAULT_SANDBOX_DIR=$SANDBOX_DIR
CYRVAULTD=${CYRVAULTD:-$BIN/cyrvaultd}
coproc DRIVER { "$BIN/examples/scale_load" "$RUN/sb" "$CYRVAULTD"; }
D_IN=${DRIVER[1]}
D_OUT=${DRIVER[0]}
DRIVER_PID_SAVED=$DRIVER_PID
cleanup() {
    echo quit >&"$D_IN" 2>/dev/null || true
    wait "$DRIVER_PID_SAVED" 2>/dev/null || true
}
trap cleanup EXIT
read -r line <&"$D_OUT"
[ "$line" = READY ] || { echo "scale.sh: driver said: $line" >&2; exit 70; }
# shellcheck disable=SC1091
. "$RUN/sb/sandbox.env"

# ask CMD...: one command to the driver, its one-line answer in $ANSWER.
ask() {
    echo "$*" >&"$D_IN"
    read -r ANSWER <&"$D_OUT"
    case $ANSWER in ERROR*) echo "scale.sh: $*: $ANSWER" >&2; exit 70 ;; esac
}

DROP=yes
drop_caches() {
    sync
    if ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then DROP=no; fi
}

# timed NAME CMD...: wall, client CPU and client peak RSS; exit status kept in NAME_RC.
timed() {
    local name=$1 rc=0
    shift
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f '%U %S %M' -o "$RUN/$name.time" "$@" || rc=$?
    t1=$(date +%s.%N)
    rec "${name}_WALL" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')"
    rec "${name}_CPU" "$(awk 'END {print $1 + $2}' "$RUN/$name.time")"
    rec "${name}_RSS_KB" "$(awk 'END {print $3}' "$RUN/$name.time")"
    rec "${name}_RC" "$rc"
}

# svc NAME: cyrvaultd's CPU (sum) and peak RSS over the sessions since the last call.
# (A service that does not log them: RSS from /proc VmHWM, CPU n/a.)
svc() {
    ask sessions
    read -r _ n cpu _ rss hwm <<<"$ANSWER"
    rec "${1}_SVC_SESSIONS" "$n"
    if [ "$n" = 0 ]; then cpu=n/a; fi
    rec "${1}_SVC_CPU_US" "$cpu"
    rec "${1}_SVC_RSS_KB" "$((rss > hwm ? rss : hwm))"
}

mailboxes() { /usr/lib/cyrus/bin/ctl_mboxlist -C "$SANDBOX_ROOT/etc/imapd.conf" -d 2>/dev/null | grep -c '"name"' || true; }

REAL=()
for ((i = 0; i < USERS; i++)); do REAL+=("$(printf 'user%04d' "$i")"); done
HELD=("${REAL[@]:0:$HOLD_USERS}")
BACKUP=("$BIN/cyrvault" backup --server "$ADDR" --secret-file "$SECRET_FILE" --vault "$VAULT" --json)
FMETA_N=${FMETA_N:-200}
rec FMETA_N "$FMETA_N"

say "loading $USERS users x $MPU messages over IMAP"
ask load-users "$USERS" "$MPU" "$SEED" "$HOLD_USERS"
read -r _ _ msgs bytes secs hmsgs hbytes <<<"$ANSWER"
rec LOADED_MSGS "$msgs"
rec LOADED_BYTES "$bytes"
rec LOAD_SECS "$secs"
rec HELD_MSGS "$hmsgs"
rec HELD_BYTES "$hbytes"
svc load >/dev/null
rec LOAD_BEFORE "$(cut -d' ' -f1-3 /proc/loadavg)"

say "full backup of the $USERS users"
drop_caches
timed full "${BACKUP[@]}" "${REAL[@]}" </dev/null >"$RUN/full.json"
svc full
rec ARCHIVE_BYTES_FULL "$(find "$VAULT" -name '*.tar.gz' -printf '%s\n' | awk '{s+=$1} END {print s}')"

say "tar | gzip -6 of the same spool"
drop_caches
timed tar_gzip6 bash -c "tar -cf - $SPOOL_DIRS 2>/dev/null | tee >(wc -c >'$RUN/tar.in') | gzip -6 | wc -c >'$RUN/tar.out'"
rec tar_gzip6_SIZE "$(cat "$RUN/tar.out")"
rec tar_SIZE_IN "$(cat "$RUN/tar.in")"

# nochange STEP: the no-change incremental of the real users, its service cost, FMETA.
nochange() {
    local s=$1
    rec "MAILBOXES_$s" "$(mailboxes)"
    rec "DB_$s" "$(stat -c %s "$SANDBOX_ROOT/conf/mailboxes.db")"
    svc "pre_$s" >/dev/null
    say "no-change incremental ($s)"
    timed "nochange_$s" "${BACKUP[@]}" "${REAL[@]}" </dev/null >"$RUN/nochange_$s.json"
    svc "nochange_$s"
    ask fmeta user0000 user0001 INBOX "$FMETA_N"
    read -r _ med min max <<<"$ANSWER"
    rec "fmeta_${s}_MEDIAN" "$med"
    rec "fmeta_${s}_MIN" "$min"
    rec "fmeta_${s}_MAX" "$max"
    svc "fmeta_$s"
}
nochange 0

if [ "$BIG_FOLDER_MSGS" != 0 ]; then
    say "the $BIG_FOLDER_MSGS-message folder"
    ask big-folder bigfolder "$BIG_FOLDER_MSGS"
    read -r _ n bytes secs <<<"$ANSWER"
    rec BIG_MSGS "$n"
    rec BIG_SECS "$secs"
    svc bigload >/dev/null
fi

if [ "$BIG_ARCHIVE" != 0 ]; then
    say "the big-archive user ($BIG_ARCHIVE bytes of mail)"
    ask big-archive bigarch "$BIG_ARCHIVE"
    read -r _ n bytes secs <<<"$ANSWER"
    rec BA_MSGS "$n"
    rec BA_BYTES "$bytes"
    rec BA_LOAD_SECS "$secs"
    svc baload >/dev/null
fi

done_steps=""
first=0
total=0
for count in $STEPS; do
    total=$((total + count * 10))
    say "ctl_mboxlist -u: $count users x 10 mailboxes (to $total bulk mailboxes)"
    ask undump "$first" "$count" 9
    read -r _ n secs <<<"$ANSWER"
    rec "undump_${total}_SECS" "$secs"
    first=$((first + count))
    nochange "$total"
    done_steps="$done_steps $total"
done
rec STEPS_DONE "\"$done_steps\""

say "+1 % new mail on ${#HELD[@]} users"
ask append-held
timed incr "${BACKUP[@]}" "${HELD[@]}" </dev/null >"$RUN/incr.json"
svc incr

if [ "$BIG_FOLDER_MSGS" != 0 ]; then
    say "FMETA + FDATA of the big folder through the protocol"
    ask fdata bigfolder INBOX
    read -r _ fm secs msgs bytes batches <<<"$ANSWER"
    rec bf_fmeta_MS "$fm"
    rec bf_FDATA_SECS "$secs"
    rec bf_FDATA_MSGS "$msgs"
    rec bf_BATCHES "$batches"
    svc bf
    # shellcheck disable=SC2086
    rec BIG_INDEX_BYTES "$(find $SPOOL_DIRS -path '*cyrus.index' -size +1M -printf '%s\n' 2>/dev/null | sort -n | tail -1)"

    say "cyrvault backup of the big folder's user"
    timed bfbackup "${BACKUP[@]}" bigfolder </dev/null >"$RUN/bfbackup.json" || true
    svc bfbackup
    if [ "$(awk -F= '$1=="bfbackup_RC"{print $2}' "$RES")" = 0 ]; then
        timed ls "$BIN/cyrvault" ls bigfolder INBOX --vault "$VAULT" >"$RUN/ls.out"
        rec LS_LINES "$(wc -l <"$RUN/ls.out")"
        timed show "$BIN/cyrvault" show bigfolder --vault "$VAULT" >"$RUN/show.out"
        g=$(grep -oE '\b[0-9a-f]{40}\b' "$RUN/ls.out" | sed -n '1000p')
        if [ -n "$g" ]; then
            drop_caches
            t0=$(date +%s%N)
            "$BIN/cyrvault" cat bigfolder "$g" --vault "$VAULT" >/dev/null
            t1=$(date +%s%N)
            rec cat_MS "$(((t1 - t0) / 1000000))"
        fi
    fi
fi

say "verify --all"
rec VERIFY_BYTES "$(find "$VAULT" -name '*.tar.gz' -printf '%s\n' | awk '{s+=$1} END {print s}')"
drop_caches
timed verify "$BIN/cyrvault" verify --all --vault "$VAULT" --json </dev/null >"$RUN/verify.json" || true

if [ "$BIG_ARCHIVE" != 0 ]; then
    ba() {
        local name=$1 what=$2
        shift 2
        rec "${name}_WHAT" "\"$what\""
        say "big archive: $what"
        timed "$name" "$@" || true
    }
    ba babackup "cyrvault backup bigarch" "${BACKUP[@]}" bigarch </dev/null >"$RUN/babackup.json"
    rec BA_ARCHIVE_BYTES "$(find "$VAULT" -name '*.tar.gz' -size +1G -printf '%s\n' | sort -n | tail -1)"
    ba baverify "cyrvault verify bigarch" "$BIN/cyrvault" verify bigarch --vault "$VAULT" >"$RUN/baverify.out"
    ba bals "cyrvault ls bigarch INBOX" "$BIN/cyrvault" ls bigarch INBOX --vault "$VAULT" >"$RUN/bals.out"
    g=$(grep -oE '\b[0-9a-f]{40}\b' "$RUN/bals.out" | tail -1 || true)
    ba bacat "cyrvault cat bigarch <last message>" "$BIN/cyrvault" cat bigarch "${g:-none}" --vault "$VAULT" >/dev/null
    ba barestore "cyrvault restore bigarch --to-eml" "$BIN/cyrvault" restore bigarch --vault "$VAULT" --to-eml "$RUN/restored" >/dev/null
    rm -rf "$RUN/restored"
fi
rec LOAD_AFTER "$(cut -d' ' -f1-3 /proc/loadavg)"
rec DROP_CACHES "$DROP"

render_table "$RES" >"$RUN/table.md"
cat "$RUN/table.md"
cp "$RUN/table.md" "$WORK/scale-table.md"
cp "$RES" "$WORK/scale-results.env"
if [ "${KEEP:-0}" != 1 ]; then
    rm -rf "$VAULT"
fi
say "results in $RUN (table: $WORK/scale-table.md; KEEP=1 keeps the vault)"
