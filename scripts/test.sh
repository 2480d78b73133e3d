#!/usr/bin/env bash
# Installs everything the tests need and runs them: Debian's Prometheus and Alertmanager
# (promtool, amtool and the end-to-end suite), the package with its test extras in .venv,
# then ruff and pytest. Extra arguments go to pytest (e.g. `-m "not slow"`).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v amtool >/dev/null 2>&1 || missing="$missing prometheus-alertmanager"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
if [ -n "$missing" ]; then
  echo "installing Debian packages:$missing"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
  # The packages may start their daemons; the tests start their own on loopback.
  $sudo pkill -x prometheus 2>/dev/null || true
  $sudo pkill -x prometheus-alertmanager 2>/dev/null || true
  $sudo pkill -f prometheus-node-exporter 2>/dev/null || true
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
