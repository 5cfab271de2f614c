# avatar-meta: two commands for users (`make demo`, `make test`), the rest for developers.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.avatar-meta-setup
# Everything that changes what `setup` installs; touching one of them re-runs it.
SETUP_INPUTS := pyproject.toml requirements/constraints.txt requirements/runtime.txt requirements/dev.txt tools/setup_venv.sh

.PHONY: setup demo test test-fast unity-check lint bench codegen clean help

help:
	@echo "make demo   - set up .venv if needed, then run the main job on the built-in headless world"
	@echo "make test   - set up .venv if needed, then run the whole test suite"
	@echo "make setup  - create/refresh .venv (idempotent: a second run does nothing slow)"
	@echo "make lint   - ruff + mypy"
	@echo "make unity-check - compile the Unity C# under mono and check parity with Python"
	@echo "make bench  - run the benchmark suites into bench/results/"
	@echo "make codegen- regenerate the C# contract file"

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	PYTHON=$(PYTHON) VENV=$(VENV) bash tools/setup_venv.sh
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/avatar-meta train config/demo.yaml --run-id demo --force
	@echo "report: $(CURDIR)/results/demo/report.md"

test: $(STAMP)
	bash tools/run_tests.sh

# The Unity checks (mono compile against stub assemblies, StreamedPolicy parity on the shared
# vectors, side-channel byte round trips). `make test` runs them too: they are part of the suite.
unity-check: $(STAMP)
	bash tools/csharp/build.sh
	$(BIN)/python -m pytest -q tests/test_unity_csharp.py tests/test_contract.py

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

lint: $(STAMP)
	$(BIN)/ruff check python tests bench tools
	$(BIN)/ruff format --check python tests bench tools
	$(BIN)/mypy

bench: $(STAMP)
	mkdir -p bench/results
	$(BIN)/avatar-meta bench protocol --out bench/results/protocol.json

codegen: $(STAMP)
	$(BIN)/python -m avatar_meta.codegen

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
