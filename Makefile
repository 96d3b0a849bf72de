# The two commands of the README. Both do all set-up on a fresh Debian 12 machine (as root).
VENV ?= .venv
PYTEST_ARGS ?=
# The suite on two workers: half of it waits on Slurm's scheduler, the other half trains, and
# together they fill both cores (tests/conftest.py keeps Slurm tests on one worker). XDIST= runs
# it in one process.
XDIST ?= -n 2 --dist loadgroup

.PHONY: demo test check lint bootstrap services-down bench bench-gpu

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/bin/tp-sweep launch sweeps/demo.yaml
	$(VENV)/bin/tp-sweep status demo

# The inner loop: lint, format, types, import contracts, then every test that needs neither Slurm
# nor PostgreSQL (no services to start).
check: lint
	$(VENV)/bin/python -m pytest -q -m "not slurm and not postgres and not slow" $(XDIST) $(PYTEST_ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: bootstrap
	@url=$$(bash scripts/services.sh up | tail -n 1) && test -n "$$url" && \
	TP_TEST_PG_URL=$$url $(VENV)/bin/python -m pytest -ra --durations=25 $(XDIST) $(PYTEST_ARGS)

services-down:
	@bash scripts/services.sh down

bench: bootstrap
	$(VENV)/bin/python bench/bench_trainer.py
	$(VENV)/bin/python bench/bench_loader.py
	$(VENV)/bin/python bench/bench_store.py
	$(VENV)/bin/python bench/bench_report.py

# On a lent GPU machine: no internet, so no bootstrap; its python3 has torch and torchvision.
PYTHON ?= python3
bench-gpu:
	$(PYTHON) bench/bench_gpu.py --out bench_gpu.json
