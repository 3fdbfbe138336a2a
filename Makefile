# Everything a fresh machine needs, in order: Debian packages, a virtualenv,
# the local CPU build of torch (before anything that depends on torch), then
# the project itself. Stamp files make a re-run skip what is already done.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: test lint format install system-packages clean demo mutation

test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed

# Mutation testing of the core modules named in pyproject.toml's [tool.mutmut] (not part of
# `make test` or CI: the full set takes hours on 2 cores). MUTANTS narrows it with mutmut's
# name globs, e.g. `make mutation MUTANTS='analysis.thurstone*'`; a re-run resumes where the
# last one stopped. The scores per module are recorded in docs/benchmarks.md.
MUTANTS ?=
MUTATION_JOBS ?= 2
mutation: $(VENV)/.mutation
	nice -n 10 $(VENV)/bin/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS)
	$(PY) benchmarks/mutation_scores.py

$(VENV)/.mutation: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[mutation]'
	touch $@

# Serve the demo study on http://127.0.0.1:5000 (prints the participant link and an admin password).
demo: install
	bash demo/serve_demo.sh

system-packages: $(VENV)/.system-packages

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

format:
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Chromium for the browser tests (playwright cannot download a browser here); nginx and
# openssl for the HTTPS test (a TLS terminator with a self-signed certificate on loopback;
# the test runs its own nginx: on a machine with systemd, `systemctl disable --now nginx`
# stops the one the package starts).
$(VENV)/.system-packages:
	@mkdir -p $(VENV)
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v nginx >/dev/null 2>&1 \
		|| ! command -v openssl >/dev/null 2>&1; then \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium fonts-dejavu-core \
			nginx openssl; \
	fi
	touch $@

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first, pinned: this version is the local CPU build; an unpinned torch
# (asked for by any dependency) would pull a multi-GB CUDA build instead.
$(VENV)/.torch: | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch $(VENV)/.system-packages
	$(PY) -m pip install -q -e '.[all,test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info mutants
