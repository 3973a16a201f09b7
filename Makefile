# Two commands for a fresh machine: `make demo` (end-to-end run on a synthetic dataset) and
# `make test` (lint, type checks, test suite). Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
DEMO_SUBJECTS ?= 6
NPROCS ?= 2
PYTEST_ARGS ?=
# real SCT and MINC for the integration tier (scripts/install-real-tools.sh), reused between runs
TOOLS_CACHE ?= .cache/real-tools

.PHONY: venv system-deps real-tools demo test lint typecheck benchmark clean

$(BIN)/spinal_bidsapp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(BIN)/spinal_bidsapp

system-deps:
	bash scripts/install-system-deps.sh

real-tools: venv
	bash scripts/install-real-tools.sh $(TOOLS_CACHE) $(abspath $(BIN))/python

demo: venv
	rm -rf $(DEMO_DIR)
	$(BIN)/spinal_bidsapp-synth demo $(DEMO_DIR) --n-subjects $(DEMO_SUBJECTS) --seed 0
	$(BIN)/spinal_bidsapp $(DEMO_DIR)/bids $(DEMO_DIR)/out participant --nprocs $(NPROCS)
	$(BIN)/spinal_bidsapp $(DEMO_DIR)/bids $(DEMO_DIR)/out group --nprocs $(NPROCS) \
		--template-resolution 1 --template-preset fast --skip-bids-validation
	@echo
	@echo "Demo finished. Outputs in $(DEMO_DIR)/out:"
	@echo "  subject reports:  $(DEMO_DIR)/out/sub-*.html  (review page: $(DEMO_DIR)/out/qc/index.html)"
	@echo "  group template:   $(DEMO_DIR)/out/tpl-SpinalCord/  (SCT-ready: tpl-SpinalCord/sct)"

lint: venv
	$(BIN)/ruff check spinal_bidsapp tests benchmarks

typecheck: venv
	$(BIN)/mypy spinal_bidsapp

test: venv system-deps real-tools lint typecheck
	SPINAL_BIDSAPP_REAL_TOOLS=$(abspath $(TOOLS_CACHE)) $(BIN)/python -m pytest -n $(NPROCS) --doctest-modules spinal_bidsapp tests $(PYTEST_ARGS)

benchmark: venv
	$(BIN)/pip install --quiet -e ".[test,benchmark]"
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
