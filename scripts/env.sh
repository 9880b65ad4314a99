# userhub's environment for the shell and supervisord.conf, which reads every
# %(ENV_...)s it needs from here. Sourced by make run, stop, chaos and bench, and by
# the test harness (tools/private_tree.py).
# The defaults are written in actors/runtime (tree_config.py and env.py); this file
# exports what that module prints. A value set beforehand wins; an empty one means
# the default.
# shellcheck shell=bash

USERHUB_ROOT="${USERHUB_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export USERHUB_ROOT
# The settings are read by a child process: a value set in this shell without
# `export` must reach it too.
for _userhub_name in "${!USERHUB_@}" PROMETHEUS_MULTIPROC_DIR PYTHONPATH; do
  if [ -n "${!_userhub_name+set}" ]; then export "${_userhub_name?}"; fi
done
# make stop may run before set-up ever made the venv; the config module needs only
# the standard library.
_userhub_python="$USERHUB_ROOT/.venv/bin/python"
[ -x "$_userhub_python" ] || _userhub_python=python3
if ! _userhub_exports="$(cd "$USERHUB_ROOT" && "$_userhub_python" -m actors.runtime.tree_config --shell)"; then
  unset _userhub_name _userhub_python _userhub_exports
  return 1 2>/dev/null || exit 1
fi
eval "$_userhub_exports"
unset _userhub_name _userhub_python _userhub_exports
