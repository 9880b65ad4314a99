#!/usr/bin/env bash
# make run: set up, start the whole supervision tree, wait until ready, say where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# shellcheck source=scripts/env.sh
. scripts/env.sh

mkdir -p "$USERHUB_VAR"/{log,run,redis,avatars} "$PROMETHEUS_MULTIPROC_DIR"
# The tree's CA and a certificate per kind of actor: made once, kept on later runs.
.venv/bin/python -m tools.pki ensure "$USERHUB_PKI_DIR"
# The private MariaDB's and Redis's passwords (var/secrets, 0600; kept on later
# runs) and the Redis config file made from them.
.venv/bin/python -m tools.secrets ensure
ctl=(.venv/bin/supervisorctl -c supervisord.conf -s "unix://$USERHUB_VAR/run/supervisor.sock")

if "${ctl[@]}" pid >/dev/null 2>&1; then
  echo "==> userhub is already running; starting anything that is stopped"
  "${ctl[@]}" start all >/dev/null || true
else
  if [ "$USERHUB_START_MYSQL" = true ]; then
    .venv/bin/python -m tools.dbsetup init
  fi
  # Metrics of a previous run's processes would be summed into this one's.
  rm -f "$PROMETHEUS_MULTIPROC_DIR"/*.db
  echo "==> starting supervisord"
  .venv/bin/supervisord -c supervisord.conf
fi

if [ "$USERHUB_START_MYSQL" = true ]; then
  .venv/bin/python -m tools.dbsetup bootstrap
else
  .venv/bin/python -m tools.dbsetup schema
fi

base="http://$USERHUB_HTTP_ADDR"
echo -n "==> waiting for $base/readyz "
http_ok() {  # no curl needed: the venv's Python asks
  .venv/bin/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null
}
for _ in $(seq 1 120); do
  if http_ok "$base/readyz"; then ready=1; break; fi
  echo -n "."; sleep 0.5
done
echo
if [ "${ready:-0}" != 1 ]; then
  echo "userhub did not become ready; see var/log/ and: ${ctl[*]} status" >&2
  "${ctl[@]}" status || true
  exit 1
fi

# A demo account to try things with (409 on later runs: it is already there).
.venv/bin/python - "$base" <<'PY' || true
import json, sys, urllib.error, urllib.request
body = {"username": "demo", "password": "demo-password-1", "nickname": "Demo User"}
request = urllib.request.Request(
    sys.argv[1] + "/api/v1/users", data=json.dumps(body).encode(),
    headers={"Content-Type": "application/json"}, method="POST",
)
try:
    urllib.request.urlopen(request, timeout=10)
except urllib.error.HTTPError as exc:
    if exc.code != 409:  # 409: the demo account is already there
        raise
PY

"${ctl[@]}" status || true  # exit code 3: the spares (supervisord.conf) are not started
cat <<TXT

userhub is up:     $base/
JSON API:          $base/api/v1/...   (see README.md)
metrics:           http://$USERHUB_ADMIN_ADDR/metrics   (admin listener)
demo account:      username demo, password demo-password-1
processes:         .venv/bin/supervisorctl status
logs:              var/log/
stop it with:      make stop
TXT
