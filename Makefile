# userhub: `make run` brings the whole tree up, `make test` proves it.
.PHONY: run stop status test unit lint chaos fuzz bench bench-quick rotate-credentials

run:
	@scripts/run.sh

stop:
	@scripts/stop.sh

status:
	@.venv/bin/supervisorctl status || true  # spares stay STOPPED until started

# New MariaDB and Redis passwords and new actor certificates for the running tree,
# applied without stopping it (docs/security.md, Credentials).
rotate-credentials:
	@bash -c '. scripts/env.sh && .venv/bin/python -m tools.rotate'

test:
	@scripts/setup.sh --browser
	@scripts/test.sh

unit:
	@.venv/bin/pytest -q tests/unit tests/chaos tests/bench

lint:
	@.venv/bin/ruff check actors tools bench tests chaos fuzz
	@.venv/bin/mypy
	@.venv/bin/lint-imports --no-cache

# Kill actors under load against the tree `make run` started; report in chaos/results/.
# CHAOS_FAULTS=default adds a Redis stop and a MariaDB restart after the kills;
# CHAOS_ARGS passes anything else to chaos.run (e.g. --private-tree); see docs/chaos.md.
chaos:
	@bash -c '. scripts/env.sh && .venv/bin/python -m chaos.run --duration $${CHAOS_DURATION:-90} --interval $${CHAOS_INTERVAL:-6} --faults "$${CHAOS_FAULTS:-}" $${CHAOS_ARGS:-}'

# The full benchmark (10M users) against the tree `make run` started; report in bench/results/.
bench:
	@bash -c '. scripts/env.sh && .venv/bin/python -m bench.run'

# The same on small data with short phases and a tiny sweep (about two minutes); make test runs it too.
bench-quick:
	@bash -c '. scripts/env.sh && .venv/bin/python -m bench.run --quick --out bench/results/quick'

# Fuzz the frame decoder for FUZZ_SECONDS (default 300); what it finds stays in var/fuzz/.
# `make test` runs a short bounded pass of the same harness (tests/unit/wire/test_fuzz_frames.py).
fuzz:
	@mkdir -p var/fuzz/frames-corpus var/fuzz/artifacts
	@.venv/bin/python fuzz/fuzz_frames.py -max_total_time=$${FUZZ_SECONDS:-300} \
		-artifact_prefix=var/fuzz/artifacts/ -print_final_stats=1 var/fuzz/frames-corpus
