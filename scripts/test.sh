#!/usr/bin/env bash
# Installs whatever is missing (Debian packages for the test servers) and runs every
# test of the workspace against real PostgreSQL 15 and MariaDB 10.11 servers that the
# test harness starts on loopback ports in temporary directories.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh   # re-runs itself through sudo when not root

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "cargo-nextest not found: installing it with cargo" >&2
    cargo install --locked cargo-nextest
fi

# one harness directory per run: servers from an earlier run are never reused here
export PONTOON_TEST_DIR="${PONTOON_TEST_DIR:-$(mktemp -d -t pontoon-test-servers.XXXXXX)}"
chmod 755 "$PONTOON_TEST_DIR"   # the postgres and mysql users must reach their data dirs
trap 'PONTOON_TEST_DIR="$PONTOON_TEST_DIR" bash scripts/stop-test-servers.sh || true' EXIT

cargo build --workspace --all-targets
cargo nextest run --workspace --no-fail-fast "$@"
