# The two commands of README.md: `make run` (everything, on the embedded defaults) and `make test`.
# Both create .venv and install the pinned requirements on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
# double: replay data/sample-changelog.jsonl with the local PyPI double (works offline);
# live: follow $WHEELWRIGHT_PYPI_URL (default https://pypi.org/pypi, whose XML-RPC needs POST)
PYPI ?= double

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# nginx serves the published tree (the tests use it with the shipped config, else a Python stand-in).
.PHONY: setup run test bench system-packages
system-packages:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; } || \
	  echo "nginx not installed: tests serve the index with wheelwright's own static server"

setup: $(STAMP) system-packages

run: setup
	$(VENV)/bin/wheelwright run --pypi $(PYPI)

test: setup
	$(VENV)/bin/pytest -q

bench: setup
	$(VENV)/bin/python bench/bench_sync.py ../shared/data/pypi-names.tsv.gz
