#!/usr/bin/env bash
# Installs everything the tests need and runs them: Debian's Prometheus and Alertmanager
# (promtool, amtool and the end-to-end suite), systemd-analyze (checks of deploy/), Chromium
# with its driver and CJK fonts (the console's browser tests), the package with its test
# extras in .venv, then ruff, mypy and pytest. Extra arguments go to pytest
# (e.g. `-m "not slow"`).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v amtool >/dev/null 2>&1 || missing="$missing prometheus-alertmanager"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"  # the two-AZ guide's certificates
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -x /usr/bin/chromedriver ] || missing="$missing chromium-driver"
# Chinese pages in the screenshots need a CJK font (fc-list ships with fontconfig, a chromium
# dependency; before chromium is installed the font is simply counted missing).
fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || missing="$missing fonts-noto-cjk"

# apt-get would start the packages' daemons (prometheus, its node exporter, alertmanager);
# the tests start their own on loopback, and on an operator's machine a daemon already running
# must not be touched either. A policy-rc.d that exits 101 ("action forbidden") tells
# invoke-rc.d and deb-systemd-invoke to start and restart nothing; it exists only during the
# install, and one already there is put back afterwards, also when the install fails.
policy=/usr/sbin/policy-rc.d
saved_policy="$policy.monitor-manager-saved"
restore_policy() {
  $sudo rm -f "$policy"
  if [ -e "$saved_policy" ]; then $sudo mv -f "$saved_policy" "$policy"; fi
}
install_without_starting_daemons() {
  # A saved copy left by a run killed mid-install is the original: keep it.
  if [ -e "$policy" ] && [ ! -e "$saved_policy" ]; then $sudo mv "$policy" "$saved_policy"; fi
  trap restore_policy EXIT
  trap 'exit 130' INT TERM
  printf '#!/bin/sh\n# scripts/test.sh: no daemon starts while it installs packages\nexit 101\n' \
    | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  restore_policy
  trap - EXIT INT TERM
}
if [ -n "$missing" ]; then
  echo "installing Debian packages:$missing"
  # shellcheck disable=SC2086 # one word per package
  install_without_starting_daemons $missing
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
.venv/bin/python -m mypy
# Tests and the benchmark, more leniently: unannotated helpers pass, annotated code must hold.
.venv/bin/python -m mypy --allow-untyped-defs --check-untyped-defs --exclude tests/e2e/conftest.py tests bench
exec .venv/bin/python -m pytest "$@"
