# kube-l2tp developer entry points. `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv deps demo test unit kernel lint fmt crds bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# System packages for the kernel suite and the demo (QEMU, Debian's kernel, iproute2).
deps:
	bash scripts/install-system-deps.sh

lint: venv
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m kube_l2tp.api.crd --check

fmt: venv
	$(BIN)/ruff format operator tests
	$(BIN)/ruff check --fix operator tests

# Regenerate crds/ from the schema's single source (operator/kube_l2tp/api/crd.py).
crds: venv
	$(BIN)/python -m kube_l2tp.api.crd --write

unit: venv
	$(BIN)/pytest tests/unit

kernel: venv deps
	bash scripts/vm.sh tests/kernel/run-in-guest.sh

test: lint unit kernel

demo: venv deps
	bash scripts/demo.sh

# Runs in the VM; writes BENCHMARKS.md (machine, date, kernel, figures, ratios).
bench: venv deps
	bash scripts/vm.sh tests/bench/run-in-guest.sh $(ARGS) | tee .bench.out
	sed -n '/^=== BENCHMARKS.md ===$$/,/^=== end ===$$/p' .bench.out | sed '1d;$$d' > BENCHMARKS.md
	rm -f .bench.out

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
