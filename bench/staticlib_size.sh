#!/usr/bin/env bash
# The size of what Cyrus links (issue 15): builds the service crate alone in release
# (`cargo build --release -p cyrvault`, none of the backup host's crates) and prints,
# beside the 10 MB target and the figure before the workspace split (125 MB, 1,938
# SQLite/tokio symbols, measured by issue 15):
#   * libcyrvault.a as built (release keeps line-table debuginfo: debug = 1),
#   * as packaged (scripts/package.sh strips debug sections),
#   * the code a program linking it gets: tests/c/harness.c linked against it with
#     --gc-sections, stripped (what a Cyrus service binary grows by),
#   * its defined symbols, and those of SQLite, PostgreSQL, tokio (must be 0).
# Not a test (a release build takes minutes): tests/crates.rs checks the symbols on
# every run. SKIP_BUILD=1 uses target/release as it is.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
if [ -z "${SKIP_BUILD:-}" ]; then
  /usr/bin/time -f "build: %e s wall, %U s user, %S s sys" cargo build --release -p cyrvault --lib
fi
lib=target/release/libcyrvault.a
[ -e "$lib" ] || { echo "staticlib_size: $lib was not built" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$lib" "$tmp/shipped.a"
strip --strip-debug --remove-section=.comment --remove-section=.note "$tmp/shipped.a"
cc -std=c11 -D_GNU_SOURCE -O2 -I include tests/c/harness.c "$lib" -Wl,--gc-sections \
  -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o "$tmp/harness"
strip "$tmp/harness"
symbols=$(nm --defined-only --format=posix "$lib" 2>/dev/null | awk 'NF>1 && $1 !~ /:$/ {n++} END {print n+0}')
host=$(nm --defined-only --format=posix "$lib" 2>/dev/null | awk '{print $1}' |
  grep -cE 'sqlite3_|rusqlite|postgres|tokio' || true)
mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN {printf "%.1f MB", b/1e6}'; }
printf '%-44s %-12s %s\n' "libcyrvault.a (release)" "now" "target / before"
printf '%-44s %-12s %s\n' "as built (debug = 1)" "$(mb "$lib")" "- / 125 MB"
printf '%-44s %-12s %s\n' "as packaged (strip --strip-debug)" "$(mb "$tmp/shipped.a")" "<= 10 MB"
printf '%-44s %-12s %s\n' "linked into a C program (gc-sections, strip)" "$(mb "$tmp/harness")" "<= 10 MB"
printf '%-44s %-12s %s\n' "defined symbols" "$symbols" "-"
printf '%-44s %-12s %s\n' "SQLite/PostgreSQL/tokio symbols" "$host" "0 / 1,938"
[ "$host" = 0 ]
