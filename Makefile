# Conveyor: `make run` starts everything locally, `make test` is what CI runs.
.PHONY: run test setup check bench clean

run:
	scripts/run

test:
	scripts/test $(ARGS)

setup:
	scripts/setup

check:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy core api jobs cli migrations tests bench
	.venv/bin/lint-imports

bench: setup
	.venv/bin/python bench/noop_throughput.py

clean:
	rm -rf build .mypy_cache .ruff_cache .pytest_cache *.egg-info
	find . -path ./.venv -prune -o -type d -name __pycache__ -exec rm -rf {} +
