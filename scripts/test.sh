#!/usr/bin/env bash
# make test: lint, type-check, then every test (unit, integration, browser).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> ruff"; .venv/bin/ruff check actors tools bench tests chaos fuzz
.venv/bin/ruff format --check --quiet actors tools bench tests chaos fuzz
echo "==> mypy"; .venv/bin/mypy
echo "==> import contract"; .venv/bin/lint-imports --no-cache | tail -n 12
echo "==> pytest"
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
