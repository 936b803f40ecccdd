#!/usr/bin/env bash
# Install what cyrvault's tests and demo need on a fresh Debian 12 machine:
# the real Cyrus IMAP (the tests start private instances of it), a C compiler
# (the C harness for the static library), PostgreSQL (the fleet tests), and the
# Rust toolchain's fmt/clippy.
# Idempotent: does nothing that is already done.
set -euo pipefail

# postgresql: the fleet tests start a private cluster (initdb + pg_ctl) on loopback.
pkgs=(cyrus-imapd cyrus-admin cyrus-clients cyrus-replication sasl2-bin gcc libc6-dev postgresql)
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

if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
fi
command -v cargo >/dev/null || { echo "setup: cargo not found (install Rust with rustup)" >&2; exit 1; }
