# The two commands a new user runs: `make demo` and `make test`. Both install what they need.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup demo test test-unit test-integration test-faults lint bench soak lab-up lab-down clean

setup:
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

test: setup lint
	$(BIN)/pytest -p no:cacheprovider tests

test-unit: setup
	$(BIN)/pytest -p no:cacheprovider tests/unit

test-integration: setup
	$(BIN)/pytest -p no:cacheprovider -m lab tests/integration --ignore=tests/integration/test_faults.py

test-faults: setup
	$(BIN)/pytest -p no:cacheprovider tests/integration/test_faults.py

# Timings, as ratios against baselines measured in the same run (not a test).
bench: setup
	$(BIN)/python bench/run.py $(if $(SIZES),--sizes $(SIZES))

# A randomized fault soak on the lab (not a test; ~20 min): MINUTES=, ROUNDS=, SEED= bound or repeat it.
soak: setup
	$(BIN)/python bench/soak.py $(if $(MINUTES),--minutes $(MINUTES)) $(if $(ROUNDS),--rounds $(ROUNDS)) \
	  $(if $(SEED),--seed $(SEED))

# ruff and mypy for the Python, shellcheck for the host-side scripts (every disable says why).
lint: setup
	$(BIN)/ruff check migrator tests bench
	$(BIN)/mypy migrator
	shellcheck -x migrator/host/*.sh migrator/lab/*.sh scripts/*.sh

lab-up: setup
	$(BIN)/migrator lab up

lab-down:
	$(BIN)/migrator lab down

clean:
	rm -rf $(VENV) *.egg-info
