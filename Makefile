# The two commands the README promises: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?=
#: The oldest Python pyproject.toml declares gets a virtualenv of its own, and the whole suite.
MIN_VENV ?= .venv-min

.PHONY: run test host-deps minimum-python kernel-matrix bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
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

## test: install what the tests need (Debian packages, virtualenvs), run the whole suite, again under the
## oldest Python gespann declares, then the kernel matrix
test: host-deps $(VENV)/.installed
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory minimum-python
	$(MAKE) --no-print-directory kernel-matrix

## minimum-python: the whole suite under the oldest Python that pyproject.toml's requires-python allows
minimum-python: $(MIN_VENV)/.installed
	$(MIN_VENV)/bin/python -c 'import sys; print("minimum-python: suite under Python", sys.version.split()[0])'
	$(MIN_VENV)/bin/python -m pytest -p no:cacheprovider

## kernel-matrix: the kernel-facing tests on Debian's 5.10, 6.1 and 6.12 kernels in VMs, and on this one
kernel-matrix: $(VENV)/.installed
	tools/setup-host.sh matrix
	$(BIN)/python tools/kernel_matrix.py

## bench: gespann side by side with bpftrace, and bcc in a Debian 6.1 VM; writes results/bench/ (not part of test)
BENCH_ARGS ?= --vm
bench: $(VENV)/.installed
	tools/setup-host.sh bench
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python tools/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(MIN_VENV) build *.egg-info .pytest_cache .hypothesis
