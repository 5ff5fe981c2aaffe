#!/usr/bin/env bash
# Installs Debian packages without letting their maintainer scripts start system services
# (a /usr/sbin/policy-rc.d that exits 101, removed afterwards if this script wrote it).
# Refreshes the package lists and tries again if the first attempt fails (a new machine
# may have none). Run as root. Usage: scripts/apt-install.sh PACKAGE...
set -euo pipefail
(($# > 0)) || exit 0

policy=/usr/sbin/policy-rc.d
created_policy=false
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\n# written by pontoon scripts/apt-install.sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  created_policy=true
  echo "wrote $policy (exit 101: no service starts during the install)"
fi
remove_policy() {
  if $created_policy; then
    rm -f "$policy"
    echo "removed $policy"
  fi
}
trap remove_policy EXIT

DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" || {
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}
echo "installed: $*"
