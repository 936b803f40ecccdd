#!/usr/bin/env bash
# Install what cyrvault's tests and demo need on a fresh Debian 12 machine:
# the real Cyrus IMAP (the tests start private instances of it), a C compiler
# (the C harness for the static library), PostgreSQL (the fleet tests), and the
# Rust toolchain's fmt/clippy.
# Idempotent: does nothing that is already done.
set -euo pipefail

# postgresql: the fleet tests start a private cluster (initdb + pg_ctl) on loopback.
# python3, libarchive-tools: independent readers the archive tests check our tar.gz with.
# strace: the scale tests count the fsyncs a backup makes (tests/scale.rs).
pkgs=(cyrus-imapd cyrus-admin cyrus-clients cyrus-replication sasl2-bin gcc libc6-dev postgresql python3 libarchive-tools strace)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the package from starting a system-wide Cyrus: tests run private ones.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
fi
command -v cargo >/dev/null || { echo "setup: cargo not found (install Rust with rustup)" >&2; exit 1; }
