#!/usr/bin/env bash
# The packages end to end, as root on this (CI) machine: build both .debs from this
# checkout (scripts/package.sh), lintian them, install them with dpkg -i (twice: the
# second is the upgrade path), check what an admin meets (the postinst's cyrus.conf
# line with /etc/cyrus.conf untouched, the cyrvault user owning the vault, `man
# cyrvault-restore`, `systemd-analyze verify` of the units, bash completion), then run
# the demo's main path with the INSTALLED binaries: /usr/bin/cyrvault and
# /usr/lib/cyrus/bin/cyrvaultd under a private Cyrus master. Purges the packages at
# the end (the vault directory is kept by the packages; this script removes its own).
# CYRVAULT_KEEP_PACKAGES=1 leaves them installed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "package-test: run as root (dpkg -i)" >&2; exit 1; }
t0=$(date +%s)
step() { echo "package-test: $* ($(($(date +%s) - t0)) s)"; }

# one package test at a time on a machine (dpkg has one lock, and /usr/bin is shared)
exec 9>/var/lock/cyrvault-package-test.lock
flock 9

# One build for the packages and the demo (package.sh finds it fresh): release by
# default, the test build with CYRVAULT_PACKAGE_PROFILE=dev (as scripts/test.sh does).
case ${CYRVAULT_PACKAGE_PROFILE:=release} in
  release) cargo build --release --lib --bins --examples; rel=target/release ;;
  dev) cargo build --workspace --all-targets; rel=target/debug ;;
  *) echo "package-test: CYRVAULT_PACKAGE_PROFILE is release or dev" >&2; exit 2 ;;
esac
export CYRVAULT_PACKAGE_PROFILE
mapfile -t debs < <(bash scripts/package.sh "target/debian-$CYRVAULT_PACKAGE_PROFILE")
[ ${#debs[@]} -eq 2 ] || { echo "package-test: expected 2 packages, got: ${debs[*]}" >&2; exit 1; }
step "built ${debs[*]}"

# Lintian: no error, no warning (what is overridden says why, in packaging/*/lintian-overrides).
lintian --fail-on error,warning --display-info "${debs[@]}"
step "lintian clean"

conf_sum=$(md5sum /etc/cyrus.conf 2>/dev/null || echo none)
out=$(dpkg -i "${debs[@]}" 2>&1) || { echo "$out"; exit 1; }
echo "$out"
grep -q 'cyrvaultd cmd="/usr/lib/cyrus/bin/cyrvaultd' <<<"$out" ||
  { echo "package-test: the postinst did not print the cyrus.conf line" >&2; exit 1; }
[ "$(md5sum /etc/cyrus.conf 2>/dev/null || echo none)" = "$conf_sum" ] ||
  { echo "package-test: /etc/cyrus.conf was changed" >&2; exit 1; }
dpkg -i "${debs[@]}" >/dev/null # the upgrade path (postinst with the old version)
dpkg-query -W -f='${Package} ${Version} ${Status}\n' cyrvault cyrvault-service
step "installed"

cleanup() {
  if [ "${CYRVAULT_KEEP_PACKAGES:-}" != 1 ]; then
    dpkg --purge cyrvault cyrvault-service >/dev/null || true
    rmdir /var/lib/cyrvault /etc/cyrvault 2>/dev/null || true
  fi
}
trap cleanup EXIT

fail() { echo "package-test: $*" >&2; exit 1; }
[ -x /usr/lib/cyrus/bin/cyrvaultd ] || fail "no /usr/lib/cyrus/bin/cyrvaultd"
[ -x /usr/bin/cyrvault ] || fail "no /usr/bin/cyrvault"
[ -f /usr/include/cyrvault.h ] || fail "no header"
ls /usr/lib/*/libcyrvault.a >/dev/null || fail "no static library"
getent passwd cyrvault >/dev/null || fail "no cyrvault user"
[ "$(stat -c %U:%a /var/lib/cyrvault)" = cyrvault:750 ] || fail "vault not owned by cyrvault"
grep -q '^/etc/cyrvault.conf$' /var/lib/dpkg/info/cyrvault.conffiles || fail "cyrvault.conf is not a conffile"

page=$(MANWIDTH=100 MANPAGER=cat man cyrvault-restore 2>&1) || fail "man cyrvault-restore: $page"
grep -q -- '--to-maildir' <<<"$page" || fail "man cyrvault-restore lacks its options"
MANPAGER=cat man 8 cyrvaultd | grep -q 'cyrvaultd_secret_file' || fail "man 8 cyrvaultd"
MANPAGER=cat man 5 cyrvault.conf | grep -q 'metrics_file' || fail "man 5 cyrvault.conf"
step "man cyrvault-restore renders"

systemd-analyze verify /lib/systemd/system/cyrvault-run.service /lib/systemd/system/cyrvault-run.timer
# what `systemctl cat cyrvault-run.timer` shows (systemctl cat needs a running systemd;
# cat-config reads the same unit and drop-ins offline)
unit=$(systemd-analyze cat-config systemd/system/cyrvault-run.timer)
echo "$unit"
grep -q '^OnCalendar=' <<<"$unit" || fail "systemd-analyze cat-config shows no cyrvault-run.timer"
systemd-analyze cat-config systemd/system/cyrvault-run.service | grep -q '^ExecStart=/usr/bin/cyrvault run' ||
  fail "cyrvault-run.service does not start cyrvault run"
# installed, and disabled until the admin enables it (systemd need not run: --root)
systemctl --root=/ list-unit-files 'cyrvault-run.*'
[ "$(systemctl --root=/ is-enabled cyrvault-run.timer)" = disabled ] || fail "the timer is not installed disabled"
step "systemd-analyze verify: units clean"

bash -c 'source /usr/share/bash-completion/completions/cyrvault && complete -p cyrvault' >/dev/null ||
  fail "bash completion does not load"
promtool check rules /usr/share/doc/cyrvault/examples/cyrvault-alerts.yml >/dev/null ||
  fail "the installed example alert rules do not load"
[ -s /usr/share/zsh/vendor-completions/_cyrvault ] && [ -s /usr/share/fish/vendor_completions.d/cyrvault.fish ] ||
  fail "zsh/fish completions missing"

# The demo's main path from the installed files.
CYRVAULT_BIN_DIR=/usr/bin CYRVAULT_SERVICE_DIR=/usr/lib/cyrus/bin "$rel/examples/demo"
step "the demo ran with the installed binaries"
