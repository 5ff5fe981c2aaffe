#!/usr/bin/env bash
# Install what the tests need on Debian 12: PostgreSQL 15 with wal2json, MariaDB, and sysbench
# (the write load of the sync tests; pgbench comes with postgresql-client).
#
# The tests (crates/testsupport) start their own servers from these packages' binaries, in
# temporary directories, without systemd or Docker; the system-wide services are never used.
# Idempotent: installs only what is missing. Runs as root, or re-runs itself through sudo.
set -euo pipefail

PACKAGES=(postgresql-15 postgresql-client-15 postgresql-15-wal2json mariadb-server mariadb-client sysbench)

if [[ $(id -u) != 0 ]]; then
  if command -v sudo >/dev/null; then
    exec sudo -- "$0" "$@"
  fi
  echo "run $0 as root (sudo not found)" >&2
  exit 1
fi

installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  echo "all test packages are installed: ${PACKAGES[*]}"
else
  echo "installing: ${missing[*]}"
  bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" "${missing[@]}"
fi

# The tests never use the system-wide servers. Stop any the packages started (a
# policy-rc.d already present may allow it) and keep the PostgreSQL cluster from starting
# with the system; a server that was running before this script is only reported.
if ((${#missing[@]} > 0)); then
  if command -v pg_lsclusters >/dev/null; then
    while read -r ver name _port status _rest; do
      [[ "$ver" =~ ^[0-9]+$ ]] || continue
      if [[ -f "/etc/postgresql/$ver/$name/start.conf" ]]; then
        echo manual >"/etc/postgresql/$ver/$name/start.conf"
        echo "PostgreSQL cluster $ver/$name: start.conf set to manual"
      fi
      if [[ "$status" == online* ]]; then
        pg_ctlcluster "$ver" "$name" stop && echo "stopped PostgreSQL cluster $ver/$name (not used by the tests)"
      fi
    done < <(pg_lsclusters --no-header 2>/dev/null || true)
  fi
  if [[ -f /run/mysqld/mysqld.pid ]] && kill -0 "$(cat /run/mysqld/mysqld.pid)" 2>/dev/null; then
    if command -v service >/dev/null && service mariadb stop >/dev/null 2>&1; then
      echo "stopped the system MariaDB service (not used by the tests)"
    else
      kill -TERM "$(cat /run/mysqld/mysqld.pid)" && echo "stopped the system mariadbd (not used by the tests)"
    fi
  fi
else
  if command -v pg_lsclusters >/dev/null && pg_lsclusters --no-header 2>/dev/null | grep -q online; then
    echo "note: a system PostgreSQL cluster is running; the tests do not use it (left alone)"
  fi
  if [[ -f /run/mysqld/mysqld.pid ]] && kill -0 "$(cat /run/mysqld/mysqld.pid)" 2>/dev/null; then
    echo "note: the system MariaDB is running; the tests do not use it (left alone)"
  fi
fi

# What the harness looks for.
pg_bin=/usr/lib/postgresql/15/bin
for tool in initdb pg_ctl postgres psql; do
  [[ -x "$pg_bin/$tool" ]] || { echo "missing $pg_bin/$tool" >&2; exit 1; }
done
[[ -f /usr/lib/postgresql/15/lib/wal2json.so ]] || { echo "missing wal2json.so" >&2; exit 1; }
for tool in mariadbd mariadb-install-db mariadb; do
  command -v "$tool" >/dev/null || [[ -x "/usr/sbin/$tool" ]] || { echo "missing $tool" >&2; exit 1; }
done
id postgres >/dev/null && id mysql >/dev/null
echo "ok: $("$pg_bin/postgres" --version), $(/usr/sbin/mariadbd --version 2>/dev/null | head -n1 || echo mariadbd)"
