#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what the tests need
# (Debian: age, zstd, sqlite3, faketime, openssh-server; Python: backupkit with all extras
# into .venv) and runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
missing=()
command -v age >/dev/null 2>&1 || missing+=(age)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)          # evidence report rendering and print tests
fc-list :lang=zh 2>/dev/null | grep -q . || missing+=(fonts-noto-cjk)
command -v pdfinfo >/dev/null 2>&1 || missing+=(poppler-utils)     # page size and page numbers of printed reports
command -v localedef >/dev/null 2>&1 && [ -d /usr/share/i18n/locales ] || missing+=(locales)
# MariaDB engine: client tools (dump and restore), the server for ephemeral scratch servers, mariadb-backup
command -v mariadb-dump >/dev/null 2>&1 && command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
{ command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; } && command -v mariadb-install-db >/dev/null 2>&1 || missing+=(mariadb-server)
command -v mariadb-backup >/dev/null 2>&1 || missing+=(mariadb-backup)
command -v pgbackrest >/dev/null 2>&1 || missing+=(pgbackrest)        # PostgreSQL physical mode (tests/fixtures/pgbackrest.py)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  # policy-rc.d keeps the package from starting the system sshd; the tests start their own.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The PostgreSQL tests create zh_CN.UTF-8 databases (in clusters they start after this line).
if ! locale -a 2>/dev/null | grep -qix 'zh_CN.utf8'; then
  echo "test.sh: generating the zh_CN.UTF-8 locale" >&2
  $SUDO localedef -i zh_CN -f UTF-8 zh_CN.UTF-8
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[all,test]'

# The PostgreSQL and MariaDB servers are provided by the machine; fail loudly, never skip.
.venv/bin/python scripts/check_services.py

exec .venv/bin/python -m pytest -q "$@"
