#!/usr/bin/env bash
# Build the fuzz targets with AFL++ instrumentation (cargo-afl, stable toolchain) and
# run them (doc/security.md, "Fuzzing").
#
#   bash fuzz/run.sh smoke [SECONDS]          every target SECONDS (default 10): CI
#   bash fuzz/run.sh long SECONDS [TARGET..]  longer runs; findings stay in fuzz/out/
#   bash fuzz/run.sh stats                    the numbers of the last runs, a table
#
# FUZZ_OUT=dir puts the runs' state elsewhere than fuzz/out (e.g. long runs beside
# a smoke run).
# A run that finds a crash or a hang fails, naming the input that did it; copy it
# into a regression test and into fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")"

TARGETS=(protocol_server protocol_client twoskip cyrus_index dlist archive_read catalog_rows)
mode="${1:-smoke}"
shift || true

# Unattended: no screen, no CPU governor or core_pattern checks (a CI machine or a
# container is what it is), no random seed (repeatable smoke runs).
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_NO_AFFINITY=1 AFL_FAST_CAL=1

OUT="${FUZZ_OUT:-out}"

stat() { sed -n "s/^$2 *: //p" "$OUT/$1/default/fuzzer_stats" 2>/dev/null | head -n1; }

print_stats() {
  printf '%-16s %9s %12s %10s %8s %9s %7s %6s\n' target seconds execs execs/s edges "of total" corpus crashes
  for t in "${TARGETS[@]}"; do
    [ -f "$OUT/$t/default/fuzzer_stats" ] || continue
    local start last
    start=$(stat "$t" start_time); last=$(stat "$t" last_update)
    printf '%-16s %9s %12s %10s %8s %9s %7s %6s\n' "$t" "$((last - start))" \
      "$(stat "$t" execs_done)" "$(stat "$t" execs_per_sec)" "$(stat "$t" edges_found)" \
      "$(stat "$t" total_edges)" "$(stat "$t" corpus_count)" "$(stat "$t" saved_crashes)"
  done
}

run() {
  local t="$1" secs="$2"
  rm -rf "${OUT:?}/$t"
  mkdir -p "$OUT"
  local dict=()
  [ -f "dict/$t.dict" ] && dict=(-x "dict/$t.dict")
  # -V: stop after SECONDS; -m none: the targets map no huge regions, but ASLR-less
  # limits are not worth a false alarm
  if ! cargo afl fuzz -V "$secs" -m none "${dict[@]}" -i "corpus/$t" -o "$OUT/$t" \
      -- "target/release/$t" > "$OUT/$t.log" 2>&1; then
    echo "fuzz: $t: afl-fuzz failed; its log:" >&2
    tail -n 30 "$OUT/$t.log" >&2
    return 1
  fi
  local found=()
  for kind in crashes hangs; do
    for f in "$OUT/$t/default/$kind"/id:*; do
      [ -e "$f" ] && found+=("$f")
    done
  done
  if [ ${#found[@]} -gt 0 ]; then
    echo "fuzz: $t: ${#found[@]} finding(s):" >&2
    printf '  fuzz/%s\n' "${found[@]}" >&2
    return 1
  fi
}

case "$mode" in
  smoke)
    secs="${1:-10}"
    cargo afl build --release --quiet
    failed=0
    for t in "${TARGETS[@]}"; do
      run "$t" "$secs" || failed=1
    done
    print_stats
    exit "$failed"
    ;;
  long)
    secs="${1:?seconds}"
    shift
    [ $# -gt 0 ] && TARGETS=("$@")
    cargo afl build --release --quiet
    failed=0
    for t in "${TARGETS[@]}"; do
      run "$t" "$secs" || failed=1
    done
    print_stats
    exit "$failed"
    ;;
  stats)
    print_stats
    ;;
  *)
    echo "usage: fuzz/run.sh smoke [SECONDS] | long SECONDS [TARGET...] | stats" >&2
    exit 64
    ;;
esac
