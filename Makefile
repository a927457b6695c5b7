# The two commands of README.md: `make run` (everything, on the embedded defaults) and `make test`.
# Both create .venv and install the pinned requirements on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
# double: replay data/sample-changelog.jsonl with the local PyPI double (works offline);
# live: follow $WHEELWRIGHT_PYPI_URL (default https://pypi.org/pypi, whose XML-RPC needs POST)
PYPI ?= double

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Debian packages the product and its tests run for real: nginx (the origin; its perl module
# canonicalises project names), Varnish with the xkey vmod
# (the edge), bubblewrap (the build sandbox), qemu-user with binfmt and mmdebstrap (Pi images on any
# machine), Chromium (the dashboard seen in a browser), docker-compose (validates the compose file),
# redis (the broker), an OpenSSH server (builder health over SSH; the SFTP endpoint's sshd_config). Installed once, as
# root, when any is missing.
SYSTEM_PACKAGES := nginx libnginx-mod-http-perl varnish varnish-modules bubblewrap qemu-user-static \
                   binfmt-support mmdebstrap chromium docker-compose redis-server openssh-server
SYSTEM_COMMANDS := /usr/sbin/nginx /usr/lib/nginx/modules/ngx_http_perl_module.so /usr/sbin/varnishd /usr/bin/bwrap \
                   /usr/bin/qemu-arm-static /usr/sbin/update-binfmts \
                   /usr/bin/mmdebstrap /usr/bin/chromium /usr/bin/docker-compose /usr/bin/redis-server \
                   /usr/sbin/sshd
.PHONY: setup run test bench system-packages
system-packages:
	@missing=0; for c in $(SYSTEM_COMMANDS); do [ -x $$c ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "missing Debian packages; as root: apt-get install $(SYSTEM_PACKAGES)" >&2; exit 1; fi; \
	fi

setup: $(STAMP) system-packages

run: setup
	$(VENV)/bin/wheelwright run --pypi $(PYPI)

test: setup
	$(VENV)/bin/pytest -q

bench: setup
	$(VENV)/bin/python bench/bench_sync.py ../shared/data/pypi-names.tsv.gz
