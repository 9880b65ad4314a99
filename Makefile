# userhub: `make run` brings the whole tree up, `make test` proves it.
.PHONY: run stop status test unit lint chaos bench bench-quick

run:
	@scripts/run.sh

stop:
	@scripts/stop.sh

status:
	@.venv/bin/supervisorctl status

test:
	@scripts/setup.sh --browser
	@scripts/test.sh

unit:
	@.venv/bin/pytest -q tests/unit

lint:
	@.venv/bin/ruff check actors tests chaos
	@.venv/bin/mypy

# Kill actors under load against the tree `make run` started; report in chaos/results/.
chaos:
	@bash -c '. scripts/env.sh && .venv/bin/python -m chaos.run --duration $${CHAOS_DURATION:-90} --interval $${CHAOS_INTERVAL:-6}'

# The full benchmark (10M users) against the tree `make run` started; report in bench/results/.
bench:
	@bash -c '. scripts/env.sh && .venv/bin/python -m bench.run'

# The same on small data with short phases (under a minute); make test runs it too.
bench-quick:
	@bash -c '. scripts/env.sh && .venv/bin/python -m bench.run --quick --out bench/results/quick'
