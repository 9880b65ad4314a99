# userhub's environment, in one place. Sourced by make run / make stop and by tests.
# Every value may be set beforehand to override it; see docs/configuration.md.
# shellcheck shell=bash

USERHUB_ROOT="${USERHUB_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export USERHUB_ROOT
export USERHUB_VAR="${USERHUB_VAR:-$USERHUB_ROOT/var}"
export USERHUB_PYTHON="${USERHUB_PYTHON:-$USERHUB_ROOT/.venv/bin/python}"
export USERHUB_OS_USER="${USERHUB_OS_USER:-$(id -un)}"

# Private MariaDB and Redis on non-standard loopback ports, unless DSNs point elsewhere.
export USERHUB_MYSQL_PORT="${USERHUB_MYSQL_PORT:-3307}"
export USERHUB_REDIS_PORT="${USERHUB_REDIS_PORT:-6380}"
if [ -n "${USERHUB_MYSQL_DSN:-}" ]; then
  export USERHUB_START_MYSQL="${USERHUB_START_MYSQL:-false}"
else
  export USERHUB_MYSQL_DSN="mysql://userhub:userhub@127.0.0.1:${USERHUB_MYSQL_PORT}/userhub"
  export USERHUB_START_MYSQL="${USERHUB_START_MYSQL:-true}"
fi
if [ -n "${USERHUB_REDIS_URL:-}" ]; then
  export USERHUB_START_REDIS="${USERHUB_START_REDIS:-false}"
else
  export USERHUB_REDIS_URL="redis://127.0.0.1:${USERHUB_REDIS_PORT}/0"
  export USERHUB_START_REDIS="${USERHUB_START_REDIS:-true}"
fi
export USERHUB_REDIS_MAXMEMORY="${USERHUB_REDIS_MAXMEMORY:-2gb}"
export USERHUB_INNODB_BUFFER_POOL="${USERHUB_INNODB_BUFFER_POOL:-4G}"

export USERHUB_MANAGER_ADDR="${USERHUB_MANAGER_ADDR:-127.0.0.1:7400}"
export USERHUB_HTTP_ADDR="${USERHUB_HTTP_ADDR:-127.0.0.1:8080}"
export USERHUB_DB_WORKERS="${USERHUB_DB_WORKERS:-2}"
export USERHUB_CACHE_WORKERS="${USERHUB_CACHE_WORKERS:-2}"
export USERHUB_GATEWAYS="${USERHUB_GATEWAYS:-2}"
export USERHUB_SPARE_WORKERS="${USERHUB_SPARE_WORKERS:-2}"  # per kind, started only on demand (supervisord.conf)
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$USERHUB_VAR/metrics}"
export PYTHONPATH="$USERHUB_ROOT${PYTHONPATH:+:$PYTHONPATH}"
