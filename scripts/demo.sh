#!/usr/bin/env bash
# Install backupkit into .venv and run the demo on the embedded default (SQLite).
# Extra arguments go to 'backupkit demo' (e.g. --dir /tmp/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .
rm -rf demo
exec .venv/bin/backupkit demo "$@"
