#!/usr/bin/env bash
# Install what the benchmarks need on Debian 12, from Debian's own archive only:
# the peer tools (pgcopydb, pgloader, mydumper/myloader, percona-toolkit's
# pt-table-checksum for bench/verify.sh), GNU time (for max RSS and CPU seconds), the
# sqlite3 CLI, and the database servers the harness drives (scripts/install-deps.sh).
#
# Idempotent: installs only what is missing. A package that is not in the archive is
# reported and skipped (bench/copy.sh then skips that peer and says so in RESULTS.md).
# Never downloads binaries from anywhere else. Runs as root, or re-runs itself through sudo.
#
# Usage: bench/setup.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

PACKAGES=(pgcopydb pgloader mydumper percona-toolkit time sqlite3)

if [[ $(id -u) != 0 ]]; then
  if command -v sudo >/dev/null; then
    exec sudo -- "$0" "$@"
  fi
  echo "run $0 as root (sudo not found)" >&2
  exit 1
fi

# The servers (PostgreSQL 15 + wal2json, MariaDB) come from the test setup script.
"$root/scripts/install-deps.sh"

installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# Whether Debian's archive (as apt knows it) has a candidate for the package.
available() {
  local candidate
  candidate=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
  [[ -n "$candidate" && "$candidate" != "(none)" ]]
}

missing=()
unavailable=()
for pkg in "${PACKAGES[@]}"; do
  installed "$pkg" && continue
  if available "$pkg"; then
    missing+=("$pkg")
  else
    unavailable+=("$pkg")
  fi
done

if ((${#unavailable[@]} > 0)); then
  # Maybe the package lists are just stale: refresh once and look again.
  apt-get update
  still=()
  for pkg in "${unavailable[@]}"; do
    if available "$pkg"; then missing+=("$pkg"); else still+=("$pkg"); fi
  done
  unavailable=("${still[@]}")
fi

if ((${#missing[@]} == 0)); then
  echo "all benchmark packages are installed (or unavailable): ${PACKAGES[*]}"
else
  echo "installing: ${missing[*]}"
  bash "$root/scripts/apt-install.sh" "${missing[@]}"
fi

if ((${#unavailable[@]} > 0)); then
  echo "NOT in this machine's Debian archive (skipped; the benchmarks skip these peers): ${unavailable[*]}"
fi

for tool in pgcopydb pgloader mydumper myloader pt-table-checksum sqlite3; do
  if command -v "$tool" >/dev/null; then
    printf '  %-17s %s\n' "$tool" "$("$tool" --version 2>&1 | grep -v '^$' | head -n1)"
  else
    printf '  %-17s missing\n' "$tool"
  fi
done
if [[ -x /usr/bin/time ]]; then
  printf '  %-17s %s\n' time "$(/usr/bin/time --version 2>&1 | head -n1)"
fi
