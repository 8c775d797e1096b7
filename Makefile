# The two commands the README promises: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?=
#: The oldest Python pyproject.toml declares gets a virtualenv of its own, and the whole suite.
MIN_VENV ?= .venv-min

.PHONY: run test lint host-deps minimum-python kernel-matrix bench image deploy-tests deploy-systemd clean

#: gespann and what it needs to run, nothing more: the install path the image takes too
$(VENV)/.installed: pyproject.toml
	PYTHON=$(PYTHON) tools/install-gespann.sh $(VENV) -e .
	touch $@

#: the test extra (pytest, hypothesis, pyroute2, ruff), for the targets that run tests
$(VENV)/.tests-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

## run: create the virtualenv, install gespann, and run it with its default config
run: $(VENV)/.installed
	$(BIN)/gespann run $(if $(CONFIG),--config $(CONFIG))

host-deps:
	tools/setup-host.sh

$(MIN_VENV)/.installed: pyproject.toml
	rm -rf $(MIN_VENV)
	python=$$(tools/python-minimum.sh) && "$$python" -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/pip install -q --upgrade pip
	$(MIN_VENV)/bin/pip install -q -e '.[test]'
	touch $@

## test: install what the tests need (Debian packages, virtualenvs), run the linter, the whole suite beside
## another gespann (tools/beside_gespann.py: the suite must share its machine), the systemd unit under
## systemd, the suite again under the oldest Python gespann declares, the image and pod deployment tests,
## then the kernel matrix
test: host-deps $(VENV)/.tests-installed
	$(BIN)/ruff check .
	$(BIN)/python tools/beside_gespann.py --gespann $(BIN)/gespann -- $(BIN)/python -m pytest
	$(MAKE) --no-print-directory deploy-systemd
	$(MAKE) --no-print-directory minimum-python
	$(MAKE) --no-print-directory deploy-tests
	$(MAKE) --no-print-directory kernel-matrix

## lint: ruff over the whole tree, with pyproject.toml's [tool.ruff] rules
lint: $(VENV)/.tests-installed
	$(BIN)/ruff check .

## minimum-python: the whole suite under the oldest Python that pyproject.toml's requires-python allows
minimum-python: $(MIN_VENV)/.installed
	$(MIN_VENV)/bin/python -c 'import sys; print("minimum-python: suite under Python", sys.version.split()[0])'
	$(MIN_VENV)/bin/python -m pytest -p no:cacheprovider

## kernel-matrix: the kernel-facing tests on Debian's 5.10, 6.1 and 6.12 kernels in VMs, and on this one
kernel-matrix: $(VENV)/.tests-installed
	tools/setup-host.sh matrix
	$(BIN)/python tools/kernel_matrix.py

## deploy-systemd: deploy/systemd/gespann.service under a real systemd, in a Debian 12 booted with
## systemd-nspawn (about 80 s: 25-45 s of it building the root file system; at most 15 min)
deploy-systemd: $(VENV)/.tests-installed
	tools/setup-host.sh systemd
	GESPANN_DEPLOY_SYSTEMD=1 timeout 900 $(BIN)/python -m pytest -p no:cacheprovider -s tests/deploy/test_systemd_unit.py

## bench: gespann side by side with bpftrace, and bcc in a Debian 6.1 VM, then an hour's soak with records
## and per-process labels on; writes results/bench/ (not part of test). A short soak alone:
## make bench BENCH_ARGS="--soak-only --soak 300"
## BENCH_ARGS=--breakdown-only: only what each program costs a loopback connection, the floor and the share
## (about 4 min with --cost-rounds 7 --connections 10000); add --compare LABEL=EXECUTABLE to set another build beside
BENCH_ARGS ?= --vm --soak 3600
bench: $(VENV)/.installed
	tools/setup-host.sh bench
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python tools/bench.py $(BENCH_ARGS)

## image: the OCI image gespann:VERSION from Debian packages and gespann's wheel (as root; tools/image/build.sh)
image:
	PYTHON=$(PYTHON) tools/image/build.sh

## deploy-tests: the image and the Kubernetes manifests under Debian's podman (tests/deploy, marker deploy);
## each test states its time bound, the whole target takes about 2 minutes
deploy-tests: $(VENV)/.tests-installed
	tools/setup-host.sh deploy
	$(MAKE) --no-print-directory image
	$(BIN)/python -m pytest -m deploy tests/deploy

clean:
	rm -rf $(VENV) $(MIN_VENV) build *.egg-info .pytest_cache .hypothesis .ruff_cache
