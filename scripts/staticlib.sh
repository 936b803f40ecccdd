#!/usr/bin/env bash
# The libcyrvault.a that ships (issue 15: what Cyrus links, <= 10 MB as packaged).
#
#   scripts/staticlib.sh OUT      build target/staticlib/libcyrvault.a, write it stripped to OUT
#   scripts/staticlib.sh OUT LIB  strip and check LIB instead (no build; package.sh's dev
#                                 package ships the test build's debug library this way)
#
# Built by itself with Cargo.toml's `staticlib` profile (release + fat LTO, one codegen
# unit, opt-level "s", no debuginfo; Cargo.toml says why), not by `cargo build
# --release`: the release profile's libcyrvault.a is ~31 MB stripped, LTO there would
# slow cyrvaultd's build and change its code, and a wrapper crate would change the
# workspace's layout. `--crate-type staticlib` overrides [lib]'s crate types for this
# one build, so only the archive is made.
#
# Stripped as scripts/package.sh ships it: debug sections, .comment, .note, and the
# LLVM bitcode (.llvmbc/.llvmcmd) that the compiler_builtins objects from the Rust
# toolchain carry (~1.5 MB; only rustc's LTO reads it, a C linker ignores it).
#
# Fails (exit 1, after writing OUT) when OUT is over CYRVAULT_STATICLIB_LIMIT bytes
# (default 10,000,000; "none": no limit), when one of the three entry points is not
# defined, or when the library cannot unwind (panic = "abort" would turn the ffi
# guard's catch_unwind into an abort inside Cyrus). Messages go to stderr: package.sh's
# stdout is its .deb list. CYRVAULT_STATICLIB_SKIP_BUILD=1 takes
# target/staticlib/libcyrvault.a as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/staticlib.sh OUT}
limit=${CYRVAULT_STATICLIB_LIMIT:-10000000}
lib=${2:-target/staticlib/libcyrvault.a}
if [ $# -lt 2 ] && [ -z "${CYRVAULT_STATICLIB_SKIP_BUILD:-}" ]; then
  cargo rustc -p cyrvault --lib --crate-type staticlib --profile staticlib >&2
fi
[ -e "$lib" ] || { echo "staticlib: $lib was not built" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
cp "$lib" "$out"
strip --strip-debug --remove-section=.comment --remove-section=.note \
  --remove-section=.llvmbc --remove-section=.llvmcmd "$out"

fail=0
symbols=$(nm --format=posix "$out" 2>/dev/null)
for entry in service_init service_main service_abort; do
  awk -v e="$entry" '$1 == e && $2 == "T" {found = 1} END {exit !found}' <<<"$symbols" ||
    { echo "staticlib: $out does not define $entry" >&2; fail=1; }
done
# panic_unwind's start_panic is the only caller of _Unwind_RaiseException
awk '$1 == "_Unwind_RaiseException" && $2 == "U" {found = 1} END {exit !found}' <<<"$symbols" ||
  { echo "staticlib: $out cannot unwind (was it built with panic = \"abort\"?)" >&2; fail=1; }
size=$(stat -c %s "$out")
if [ "$limit" != none ] && [ "$size" -gt "$limit" ]; then
  echo "staticlib: $out is $size bytes stripped, over the $limit-byte limit (issue 15)" >&2
  fail=1
fi
exit "$fail"
