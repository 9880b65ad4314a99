#!/usr/bin/env bash
# make stop: stop the whole tree (workers drain first) and supervisord itself.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh
sock="$USERHUB_VAR/run/supervisor.sock"
if [ -S "$sock" ] && .venv/bin/supervisorctl -c supervisord.conf -s "unix://$sock" pid >/dev/null 2>&1; then
  .venv/bin/supervisorctl -c supervisord.conf -s "unix://$sock" shutdown
  for _ in $(seq 1 120); do [ -S "$sock" ] || break; sleep 0.5; done
  echo "userhub stopped"
else
  echo "userhub is not running"
fi
