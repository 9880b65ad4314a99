# userhub: `make run` brings the whole tree up, `make test` proves it.
.PHONY: run stop status test unit lint logs

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
