#!/usr/bin/env bash
# Install what cyrvault's tests and demo need on a fresh Debian 12 machine:
# the real Cyrus IMAP (the tests start private instances of it), Cyrus 3.10
# unpacked beside it (the tests that matter run on both), a C compiler (the C
# harness for the static library), PostgreSQL (the fleet tests), AFL++ and cargo-afl
# (the fuzz smoke run, fuzz/run.sh), and the Rust toolchain's fmt/clippy.
# Idempotent: does nothing that is already done.
set -euo pipefail

# postgresql: the fleet tests start a private cluster (initdb + pg_ctl) on loopback.
# python3, libarchive-tools: independent readers the archive tests check our tar.gz with.
# afl++: AFL++'s tools and the C toolchain and make cargo-afl builds its AFL++ with (fuzz/).
# strace: the scale tests count the fsyncs a backup makes (tests/scale.rs).
# eatmydata: preloaded into `ctl_mboxlist -u` by tests that add tens of thousands of
# mailboxes (Cyrus fsyncs each entry; tests/listing.rs).
pkgs=(cyrus-imapd cyrus-admin cyrus-clients cyrus-replication sasl2-bin gcc libc6-dev postgresql python3 libarchive-tools afl++ strace eatmydata)
# The operations tests (issue 15), installed without their Recommends (prometheus
# would bring node-exporter and its collectors; only promtool is used): dpkg-dev
# (dpkg-shlibdeps), lintian, man-db and groff-base (man pages render), systemd
# (systemd-analyze verify of the units), curl and promtool (a live --metrics-listen).
ops_pkgs=(dpkg-dev lintian man-db groff-base systemd curl prometheus)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
ops_missing=()
for p in "${ops_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || ops_missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] || [ ${#ops_missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]} ${ops_missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the package from starting a system-wide Cyrus: tests run private ones.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ ${#ops_missing[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${ops_missing[@]}" >/dev/null
  fi
fi

# Cyrus 3.10 from bookworm-backports, BESIDE the system's 3.6 (which stays the
# system Cyrus): its packages are downloaded with a private apt state (nothing is
# installed, the system's apt sources are untouched) and unpacked with dpkg -x
# into $CYRUS310. Its programs run with LD_LIBRARY_PATH=$CYRUS310/usr/lib/x86_64-linux-gnu
# (testkit/src/sandbox/install.rs). The only library it needs that Debian 12's 3.6 does
# not is bookworm's libpcre2-posix3 (libclamav11, for cyr_virusscan only, is left
# out). A stamp file marks a complete unpack; a partial one is redone.
CYRUS310=${CYRVAULT_CYRUS310_DIR:-/opt/cyrus-3.10}
if [ ! -e "$CYRUS310/.complete" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to unpack Cyrus 3.10 into $CYRUS310" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$CYRUS310")"
  exec 9>"$CYRUS310.lock"
  flock 9
  if [ ! -e "$CYRUS310/.complete" ]; then (
    # a subshell: its EXIT trap removes the scratch directory, whatever happens
    t0=$(date +%s%N)
    work=$(mktemp -d /tmp/cyrvault-cyrus310.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
    echo 'deb http://deb.debian.org/debian bookworm-backports main' > "$work/sources.list"
    private=(-o "Dir::Etc::sourcelist=$work/sources.list" -o Dir::Etc::sourceparts=-
             -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
             -o APT::Sandbox::User=root)
    apt-get "${private[@]}" update -qq
    (cd "$work/debs" && apt-get "${private[@]}" download -qq \
      cyrus-common/bookworm-backports cyrus-imapd/bookworm-backports \
      cyrus-admin/bookworm-backports cyrus-clients/bookworm-backports \
      cyrus-replication/bookworm-backports)
    # bookworm's own library, from the system's apt state (update it if stale)
    (cd "$work/debs" && { apt-get -o APT::Sandbox::User=root download -qq libpcre2-posix3 2>/dev/null ||
      { apt-get update -qq && apt-get -o APT::Sandbox::User=root download -qq libpcre2-posix3; }; })
    rm -rf "$CYRUS310.new"
    mkdir -p "$CYRUS310.new"
    for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$CYRUS310.new"; done
    lib="$CYRUS310.new/usr/lib/x86_64-linux-gnu"
    bin="$CYRUS310.new/usr/lib/cyrus/bin"
    for prog in master imapd lmtpd ctl_cyrusdb ctl_mboxlist mbexamine mbpath reconstruct \
                sync_server cyr_dbtool unexpunge; do
      if LD_LIBRARY_PATH="$lib" ldd "$bin/$prog" | grep -q 'not found'; then
        echo "setup: $bin/$prog misses libraries:" >&2
        LD_LIBRARY_PATH="$lib" ldd "$bin/$prog" | grep 'not found' >&2
        exit 1
      fi
    done
    version=$(LD_LIBRARY_PATH="$lib" "$bin/master" -V)
    case "$version" in
      "cyrus-imapd 3.10."*) ;;
      *) echo "setup: unexpected Cyrus from bookworm-backports: $version" >&2; exit 1 ;;
    esac
    (cd "$work/debs" && ls *.deb) > "$CYRUS310.new/.complete"
    rm -rf "$CYRUS310"
    mv "$CYRUS310.new" "$CYRUS310"
    t1=$(date +%s%N)
    echo "setup: $version unpacked into $CYRUS310 in $(( (t1 - t0) / 1000000 )) ms"
  ) fi
  flock -u 9
fi

if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
fi
command -v cargo >/dev/null || { echo "setup: cargo not found (install Rust with rustup)" >&2; exit 1; }

# cargo-afl builds the fuzz targets with AFL++'s instrumentation on the stable
# toolchain and brings the matching afl-fuzz: `cargo afl config --build` builds
# AFL++'s afl-fuzz and runtime (no LLVM plugins) from the copy it ships, with the
# make and cc that Debian's afl++ package depends on (about 20 s of CPU), once per Rust
# version, under ~/.local/share/afl.rs. It refuses to run again once built: that
# answer is success here.
if ! cargo afl --version >/dev/null 2>&1; then
  cargo install cargo-afl --version 0.18.2 --locked
fi
if ! out=$(cargo afl config --build 2>&1); then
  case "$out" in
    *"already built"*) ;;
    *) echo "setup: cargo afl config --build failed:" >&2; echo "$out" >&2; exit 1 ;;
  esac
fi
