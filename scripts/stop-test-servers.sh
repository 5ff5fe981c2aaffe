#!/usr/bin/env bash
# Stop the PostgreSQL and MariaDB servers that the tests (crates/testsupport) started and
# left running for later test runs, and any private instance left by a killed test process.
#
# Usage: scripts/stop-test-servers.sh [--wipe]
#   --wipe   also delete the servers' directory (data, logs)
#
# The directory is $PONTOON_TEST_DIR, else ${TMPDIR:-/tmp}/pontoon-test-servers-v1, as in
# the harness. Safe to run when nothing is running.
set -euo pipefail

wipe=false
case "${1:-}" in
  --wipe) wipe=true ;;
  "") ;;
  *) echo "usage: $0 [--wipe]" >&2; exit 2 ;;
esac

base="${PONTOON_TEST_DIR:-${TMPDIR:-/tmp}/pontoon-test-servers-v1}"
if [[ ! -d "$base" ]]; then
  echo "nothing to stop: $base does not exist"
  exit 0
fi

# Run as the owner of the data directory when we are root (pg_ctl refuses to run as root).
as_user() {
  local user=$1; shift
  if [[ $(id -u) == 0 ]]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

# Whether pid $1 is a live process working in directory $2 (not a recycled pid).
server_alive() {
  local pid=$1 data=$2
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
  [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$(readlink -f "$data")" ]]
}

first_line() { [[ -f "$1" ]] && head -n1 "$1" | tr -d '[:space:]' || true; }

# Wait up to $2 seconds for pid $1 to exit; SIGKILL it after that.
wait_or_kill() {
  local pid=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    [[ -d "/proc/$pid" && "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 0
    sleep 0.1
  done
  echo "  pid $pid still running after ${secs}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

pg_bin() {
  if [[ -x /usr/lib/postgresql/15/bin/pg_ctl ]]; then
    echo /usr/lib/postgresql/15/bin
  else
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1
  fi
}

stop_pg() { # $1: instance dir
  local dir=$1 pid
  pid=$(first_line "$dir/data/postmaster.pid")
  if server_alive "$pid" "$dir/data"; then
    echo "stopping PostgreSQL (pid $pid) in $dir"
    as_user "$(stat -c %U "$dir/data")" "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w -t 60 -s stop \
      || { echo "  pg_ctl stop failed: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
    return 0
  fi
  return 1
}

stop_mariadb() { # $1: instance dir
  local dir=$1 pid
  for file in "$dir/pid" "$dir/run/mysqld.pid"; do
    pid=$(first_line "$file")
    if server_alive "$pid" "$dir/data"; then
      echo "stopping MariaDB (pid $pid) in $dir"
      kill -TERM "$pid" 2>/dev/null || true
      wait_or_kill "$pid" 60
      return 0
    fi
  done
  return 1
}

stopped=0
with_lock() { # $1: lock file, rest: command. Waits for a test process that is starting it.
  local lock=$1; shift
  if [[ -f "$lock" ]] && command -v flock >/dev/null; then
    exec 9>>"$lock"
    flock -w 120 9 || echo "  could not lock $lock; going on"
    "$@" && stopped=$((stopped + 1)) || true
    exec 9>&-
  else
    "$@" && stopped=$((stopped + 1)) || true
  fi
}

[[ -d "$base/pg" ]] && with_lock "$base/pg/lock" stop_pg "$base/pg"
[[ -d "$base/mariadb" ]] && with_lock "$base/mariadb/lock" stop_mariadb "$base/mariadb"

# Private instances whose test process is gone (a running test's instance is left alone).
if [[ -d "$base/private" ]]; then
  for dir in "$base"/private/*/; do
    [[ -d "$dir" ]] || continue
    dir=${dir%/}
    name=$(basename "$dir")
    owner=$(cut -d- -f2 <<<"$name")
    if [[ -n "$owner" && -d "/proc/$owner" ]]; then
      echo "leaving $dir: its test process $owner is running"
      continue
    fi
    case "$name" in
      pg-*) stop_pg "$dir" && stopped=$((stopped + 1)) || true ;;
      mariadb-*) stop_mariadb "$dir" && stopped=$((stopped + 1)) || true ;;
    esac
    rm -rf "$dir"
    echo "removed leftover private instance $dir"
  done
fi

echo "stopped $stopped server(s)"
if $wipe; then
  rm -rf "$base"
  echo "removed $base"
fi
