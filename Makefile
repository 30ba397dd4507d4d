# Two entry points (see README): `make demo` and `make test`. Each sets itself up on a fresh
# machine: a ./.venv, torch's CPU build pinned FIRST (see TORCH below), then the project with
# all its extras under constraints.txt (the versions we tested).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.closedloop-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check
DEMO_STORE := sqlite:///.closedloop/demo.db
# torch's CPU build. On Linux, PyPI's torch==2.13.0 is the CUDA build (~20 nvidia-* wheels,
# several GB): pinning the version does not avoid it. A machine whose pip already offers the
# CPU build (a wheel folder or local index, as on our CI machines) installs that; otherwise
# it comes from PyTorch's CPU index (the other dependencies still from PyPI).
TORCH := torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: demo test lint typecheck pytest bench peers setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [ "$$(uname -s)" != Linux ] || $(PIP) install --dry-run --quiet --no-deps --report - \
	    $(TORCH) 2>/dev/null | grep -q '"version": *"2[.]13[.]0+cpu"'; then \
	  echo "$(PIP) install -q -c constraints.txt $(TORCH)"; \
	  $(PIP) install -q -c constraints.txt $(TORCH); \
	else \
	  echo "pip offers no CPU build of $(TORCH) here: taking it from $(TORCH_CPU_INDEX)"; \
	  $(PIP) install -q -c constraints.txt $(TORCH) --index-url $(TORCH_CPU_INDEX) \
	    --extra-index-url https://pypi.org/simple; \
	fi
	$(PIP) install -q -c constraints.txt -e '.[dev,ax]'
	$(BIN)/python -m planners._kernels
	@touch $(STAMP)

demo: $(STAMP)
	@rm -f .closedloop/demo.db .closedloop/demo.db-wal .closedloop/demo.db-shm
	$(BIN)/closedloop run campaigns/flow_reactor.yaml --store $(DEMO_STORE)
	$(BIN)/closedloop status --store $(DEMO_STORE)
	$(BIN)/closedloop report --store $(DEMO_STORE) -o .closedloop/demo-report.png

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The packages (pyproject's [tool.mypy]), then the tests: the tests have no __init__.py, so
# their modules are named from their paths (two conftest.py files would otherwise clash).
typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --explicit-package-bases tests

# Two test processes per core (pytest-xdist), at most 16, tests handed to whichever is idle
# (worksteal). The suite is not CPU-bound at one per core: its tests wait on simulated
# latencies, timeouts, signals and subprocesses. On 2 cores (session 24), one per core took
# ~15 min for 20 CPU-minutes; two per core 10:24 for 20. Two per core first failed now and then:
# a loopback socket some test left open was garbage-collected inside another test, whose
# ResourceWarning is an error here; it was the Dask probe's (simulators/_executor.py,
# _close_orphaned_streams). tests/conftest.py keeps torch and BLAS to one thread per process:
# a second, spinning OpenMP thread per worker made GP fits ~3x slower.
# --durations=25: CI's log names the slowest tests, where the suite's time goes.
WORKERS ?= $(shell n=$$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1); n=$$((2 * n)); \
	echo $$((n > 16 ? 16 : n)))

pytest: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist worksteal --durations=25

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# closedloop against its peers' defaults (BayBE from the peers extra, Ax) on issue 2's noisy
# Hartmann6, 40 seeds (47 min on 2 cores); see benchmarks/README.md.
peers: $(STAMP)
	$(PIP) install -q -c constraints.txt -e '.[dev,ax,peers]'
	$(BIN)/python benchmarks/peers.py

clean:
	rm -rf $(VENV) .closedloop .pytest_cache .mypy_cache .ruff_cache
