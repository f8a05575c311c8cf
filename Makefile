# vtcc: `make train` and `make test` set everything up on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# The exact versions the suite passed with (make lock refreshes it from .venv).
CONSTRAINTS := constraints.txt
TEST_WORKERS ?= 2

.PHONY: help install train test test-unit test-slurm lint format bench clean gpu-wheels gpu-check lock wheel-check docs

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[test]' $(TORCH_PINS)
	touch $(STAMP)

install: $(STAMP)  ## create .venv with pinned torch and vtcc (a no-op when up to date)

train: install  ## train the default job (VTCC on the embedded digits); ARGS="key=value ..." adds overrides
	$(BIN)/vtcc-train $(ARGS)

test: install  ## run the test suite (tests/unit, integration, e2e; not the SLURM tests) on 2 single-threaded processes (exit 5, no tests collected, is a failure)
	env -u PYTHONDONTWRITEBYTECODE OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slurm" $(ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "no tests were collected: failing"; exit 1; fi; exit $$status

test-unit: install  ## the unit tests alone (tests/unit: no training run, no subprocess), a quick pass
	env -u PYTHONDONTWRITEBYTECODE OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile tests/unit $(ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "no tests were collected: failing"; exit 1; fi; exit $$status

test-slurm: install  ## the SLURM tests on a running cluster (.ci/slurm-up starts a one-host one; CI runs both)
	$(BIN)/python -m pytest -m slurm tests/e2e/test_slurm.py $(ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "no tests were collected: failing"; exit 1; fi; exit $$status

lint: install  ## ruff lint and format check; the import layers (lint-imports, pyproject.toml's [tool.importlinter])
	$(BIN)/ruff check vtcc tests scripts examples
	$(BIN)/ruff format --check vtcc tests scripts examples
	$(BIN)/lint-imports

docs: install  ## build the documentation site into site/ (mkdocs --strict: a broken link or page fails it)
	$(BIN)/mkdocs build --strict --site-dir site

format: install  ## ruff format and autofix
	$(BIN)/ruff format vtcc tests scripts examples
	$(BIN)/ruff check --fix vtcc tests scripts examples

lock: install  ## write constraints.txt: the exact versions installed in .venv (after a passing suite)
	{ sed -n '1,3p' $(CONSTRAINTS); $(BIN)/pip freeze --exclude-editable | grep -v '^vtcc'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

wheel-check: install  ## build the wheel, install it in a fresh venv, run vtcc-train/eval/predict from a temp dir
	$(BIN)/python scripts/check_wheel.py --python $(PYTHON) --constraints $(CONSTRAINTS)

bench: install  ## throughput benchmark (prints a table, exit 1 naming a configuration that fails; the ViT-small ones on a CPU with ARGS=--all)
	$(BIN)/python scripts/benchmark.py $(ARGS)

clean:  ## remove build outputs and caches (keeps .venv and outputs/)
	rm -rf build site *.egg-info .pytest_cache .ruff_cache .import_linter_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

gpu-wheels:  ## download the wheels a lent GPU machine lacks into .whl/ (hydra-core, omegaconf, antlr4, kornia)
	mkdir -p .whl
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl hydra-core==1.3.8 omegaconf==2.3.1 kornia==0.9.0 kornia-rs==0.2.0
	$(PYTHON) -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3  # published as source only; pure Python

# a lent GPU machine's own python3 (the wheels add what it lacks); CI: GPU_CHECK_PYTHON=.venv/bin/python
GPU_CHECK_PYTHON ?= python3
gpu-check:  ## on a GPU machine: gpu-marked tests + GPU benchmarks -> $OUT or gpu_check/summary.{json,md}; exit 1 when a step fails (no CUDA: a CPU smoke check)
	$(GPU_CHECK_PYTHON) scripts/gpu_check.py --wheels .whl $(ARGS)
