#!/usr/bin/env bash
# The size of what Cyrus links (issue 15): builds libcyrvault.a the way it ships
# (scripts/staticlib.sh: the service crate alone, Cargo.toml's `staticlib` profile, none
# of the backup host's crates) and prints, beside the 10 MB target and the figure
# before the workspace split (125 MB, 1,938 SQLite/tokio symbols, measured by issue 15):
#   * the build's wall and CPU time,
#   * libcyrvault.a as built (target/staticlib, unstripped),
#   * as packaged (scripts/staticlib.sh's strip, what scripts/package.sh ships),
#   * what is in it: the Rust object (fat LTO: the service, rustls, std), Rust's
#     compiler_builtins, aws-lc's C and assembly,
#   * the code a program linking it gets: tests/c/harness.c linked against the packaged
#     archive with --gc-sections, stripped (what a Cyrus service binary grows by), and
#     run (a session over a socketpair, an init failure: tests/ffi_c.rs's two modes),
#   * its defined symbols, and those of SQLite, PostgreSQL, tokio (must be 0),
#   * for comparison, the release profile's libcyrvault.a stripped the same way, when
#     target/release/libcyrvault.a exists (any `cargo build --release` makes it).
# Not a test (the staticlib profile rebuilds every dependency, aws-lc included: ~2 min
# of CPU from clean): tests/crates.rs checks the symbols of the debug library on every
# run, and scripts/package.sh refuses to package a library over 10 MB. Exits 1 when
# the packaged library is over 10 MB or carries a host symbol.
# SKIP_BUILD=1 uses target/staticlib as it is.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
lib=target/staticlib/libcyrvault.a
shipped=$tmp/shipped.a
over=0
if [ -z "${SKIP_BUILD:-}" ]; then
  /usr/bin/time -o "$tmp/time" -f "%e s wall, %U s user + %S s sys CPU" \
    bash scripts/staticlib.sh "$shipped" || over=1
  built="$(cat "$tmp/time")"
else
  CYRVAULT_STATICLIB_SKIP_BUILD=1 bash scripts/staticlib.sh "$shipped" || over=1
  built="(SKIP_BUILD)"
fi
cc -std=c11 -D_GNU_SOURCE -O2 -I include tests/c/harness.c "$shipped" -Wl,--gc-sections \
  -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o "$tmp/harness"
strip "$tmp/harness"
# the packaged archive works: the C harness's session and init failure (tests/ffi_c.rs)
for mode in session badinit; do
  CYRUS_SERVICE=cyrvault-staticlib-size "$tmp/harness" "$mode" >/dev/null ||
    { echo "staticlib_size: the harness linked against the packaged library failed ($mode)" >&2; over=1; }
done
symbols=$(nm --defined-only --format=posix "$lib" 2>/dev/null | awk 'NF>1 && $1 !~ /:$/ {n++} END {print n+0}')
host=$(nm --defined-only --format=posix "$lib" 2>/dev/null | awk '{print $1}' |
  grep -cE 'sqlite3_|rusqlite|postgres|tokio' || true)

# bytes of the packaged archive's members by kind
mkdir "$tmp/x"
(cd "$tmp/x" && ar x "$shipped")
part() { # PREFIX -> MB of the members whose names start with it
  find "$tmp/x" -name "$1*" -printf '%s\n' | awk '{s += $1} END {printf "%.2f MB", s/1e6}'
}
rust=$(part cyrvault-)
builtins=$(part compiler_builtins-)
members=$(ar t "$shipped" | wc -l)

echo "build (scripts/staticlib.sh: cargo rustc --profile staticlib, strip, checks): $built"
mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN {printf "%.2f MB", b/1e6}'; }
printf '%-52s %-14s %s\n' "libcyrvault.a (profile staticlib)" "now" "target / before"
printf '%-52s %-14s %s\n' "as built (no debuginfo asked; std's remains)" "$(mb "$lib")" "- / 125 MB"
printf '%-52s %-14s %s\n' "as packaged (scripts/staticlib.sh's strip)" "$(mb "$shipped")" "<= 10 MB"
printf '%-52s %-14s %s\n' "  Rust object (service, rustls, std; fat LTO)" "$rust" "-"
printf '%-52s %-14s %s\n' "  Rust's compiler_builtins" "$builtins" "-"
printf '%-52s %-14s %s\n' "  aws-lc (C and assembly) and the rest, $members members" \
  "$(awk -v t="$(stat -c %s "$shipped")" -v r="${rust% MB}" -v b="${builtins% MB}" \
    'BEGIN {printf "%.2f MB", t/1e6 - r - b}')" "-"
printf '%-52s %-14s %s\n' "linked into a C program (gc-sections, strip)" "$(mb "$tmp/harness")" "<= 10 MB"
printf '%-52s %-14s %s\n' "defined symbols" "$symbols" "-"
printf '%-52s %-14s %s\n' "SQLite/PostgreSQL/tokio symbols" "$host" "0 / 1,938"
if [ -e target/release/libcyrvault.a ]; then
  cp target/release/libcyrvault.a "$tmp/release.a"
  strip --strip-debug --remove-section=.comment --remove-section=.note \
    --remove-section=.llvmbc --remove-section=.llvmcmd "$tmp/release.a"
  printf '%-52s %-14s %s\n' "for comparison: profile release, same strip" "$(mb "$tmp/release.a")" "-"
fi
[ "$host" = 0 ] && [ "$over" = 0 ]
