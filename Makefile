# The two commands of README.md: `make run` (everything, on the embedded defaults) and `make test`.
# Both create .venv and install the pinned requirements on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
# double: replay data/sample-changelog.jsonl with the local PyPI double (works offline);
# live: follow $WHEELWRIGHT_PYPI_URL (default https://pypi.org/pypi, whose XML-RPC needs POST)
PYPI ?= double
MULTIARCH := $(shell gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Debian packages the product and its tests run for real: nginx (the origin; its perl module
# canonicalises project names), Varnish with the xkey vmod (the edge), bubblewrap (the build sandbox),
# mmdebstrap with arch-test (Pi images on any machine: mmdebstrap refuses a foreign architecture
# without arch-test, which is only its Recommends) and qemu-user with binfmt (their binaries here),
# Chromium (pages seen in a browser), docker-compose (validates the compose file), redis (the broker),
# an OpenSSH server (builder health over SSH; the SFTP endpoint's sshd_config, run for real in the tests,
# its builder accounts given by nss_wrapper so no test adds users to the machine), e2fsprogs and mount
# (a build's own file system: mkfs.ext4 on a loop device, its disk quota). Installed once, as
# root, when any is missing. SYSTEM_COMMANDS lists what is actually run, also through another
# program (mmdebstrap runs arch-test; the kernel runs qemu-arm-static and qemu-aarch64-static).
SYSTEM_PACKAGES := nginx libnginx-mod-http-perl varnish varnish-modules bubblewrap qemu-user-static \
                   binfmt-support mmdebstrap arch-test chromium docker-compose redis-server openssh-server \
                   libnss-wrapper e2fsprogs mount
SYSTEM_COMMANDS := /usr/sbin/nginx /usr/lib/nginx/modules/ngx_http_perl_module.so /usr/sbin/varnishd \
                   /usr/lib/$(MULTIARCH)/varnish/vmods/libvmod_xkey.so /usr/bin/bwrap \
                   /usr/bin/qemu-arm-static /usr/bin/qemu-aarch64-static /usr/sbin/update-binfmts \
                   /usr/bin/mmdebstrap /usr/bin/arch-test /usr/bin/chromium /usr/bin/docker-compose \
                   /usr/bin/redis-server /usr/sbin/sshd /usr/bin/ssh-keygen \
                   /usr/lib/$(MULTIARCH)/libnss_wrapper.so /usr/sbin/mkfs.ext4 /usr/bin/mount /usr/bin/umount
# The binfmt_misc handlers the Pi images run under on a machine that is not ARM (qemu-user-static's,
# with the F flag, so they work inside the sandbox's namespaces).
BINFMT_HANDLERS := qemu-arm qemu-aarch64
.PHONY: setup run test bench system-packages emulation
system-packages:
	@missing=0; for c in $(SYSTEM_COMMANDS); do [ -e $$c ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "missing Debian packages; as root: apt-get install $(SYSTEM_PACKAGES)" >&2; exit 1; fi; \
	fi

# binfmt_misc is the kernel's: mounted and given qemu's handlers here (Debian's postinst does it only
# under systemd), so ARM binaries run on any machine. Not needed on an ARM machine.
emulation: system-packages
	@case "$$(uname -m)" in aarch64|armv7l|armv8l) exit 0;; esac; \
	missing=0; for h in $(BINFMT_HANDLERS); do grep -qs '^enabled' /proc/sys/fs/binfmt_misc/$$h || missing=1; done; \
	[ $$missing = 0 ] && exit 0; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "qemu's binfmt_misc handlers are not registered; as root: mount -t binfmt_misc binfmt_misc" \
	       "/proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-arm; update-binfmts --enable qemu-aarch64" >&2; exit 1; \
	fi; \
	[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; \
	for h in $(BINFMT_HANDLERS); do update-binfmts --enable $$h; done

setup: $(STAMP) system-packages emulation

run: setup
	$(VENV)/bin/wheelwright run --pypi $(PYPI)

test: setup
	$(VENV)/bin/pytest -q

bench: setup
	$(VENV)/bin/python bench/bench_sync.py ../shared/data/pypi-names.tsv.gz
