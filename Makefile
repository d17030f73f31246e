# pyckpt: `make demo` and `make test` each run `make setup` first (Debian
# packages, the venv, PyPI packages, the builds; quick when all is done), so
# either works alone from a fresh clone on Debian bookworm, as root.
SHELL := /bin/bash
.DEFAULT_GOAL := build

VENV := .venv
PY := $(VENV)/bin/python
RESULTS := results
# `=`, not `:=`: evaluated when a recipe uses it, after setup may have
# installed the kernel. The same choice as vm/run.sh's (see vm/kver.sh).
KVER = $(shell vm/kver.sh)
PYSTAMP := $(VENV)/.pyckpt-installed
SUBMAKE := $(MAKE) --no-print-directory

.PHONY: build setup test demo bench vm-shell clean distclean

setup:
	@vm/setup.sh
	@$(SUBMAKE) build

build: $(PYSTAMP)
	@$(SUBMAKE) -C kmod KVER=$(KVER)
	@$(SUBMAKE) -C kmod/host

# the PyPI packages, and the cffi extension pyckpt._ckpt (built from ckpt.h)
$(PYSTAMP): $(wildcard pyproject.toml setup.py cffi_build.py kmod/include/uapi/ckpt.h)
	@test -x $(PY) || { echo "no $(VENV): run make setup" >&2; exit 1; }
	@mkdir -p build
	@echo "pip install -e '.[test,vm]' (log: build/pip.log)"
	@$(PY) -m pip install -e '.[test,vm]' >build/pip.log 2>&1 || \
		{ tail -n 40 build/pip.log >&2; exit 1; }
	@touch $@

# Host core under ASan/UBSan, host pytest, then one VM boot for tests/vm.
# Every phase runs even if one before failed; the last line counts them all.
test: setup
	@rm -rf $(RESULTS) && mkdir -p $(RESULTS)
	@rc=0; \
	echo "== host: objhash and deferqueue under ASan/UBSan (make -C kmod/host test)"; \
	$(SUBMAKE) -C kmod/host test 2>&1 | tee $(RESULTS)/host-core.txt; \
	[ "$${PIPESTATUS[0]}" = 0 ] || rc=1; \
	echo "== host: pytest (tests/, without tests/vm)"; \
	$(PY) -m pytest tests --ignore=tests/vm -p no:cacheprovider \
		--junitxml=$(RESULTS)/host.xml || rc=1; \
	echo "== vm: vm/run-tests.sh (tests/vm in QEMU, one boot)"; \
	vm/run-tests.sh || rc=1; \
	$(PY) tests/summary.py --rc $$rc --core $(RESULTS)/host-core.txt \
		host=$(RESULTS)/host.xml vm=$(RESULTS)/vm.xml \
		vm-harness=$(RESULTS)/vm-harness.xml

demo: setup
	@vm/run.sh python -m pyckpt.demo

# figures, not tests: the host core (fixed vs growing buckets up to 10^6,
# clear vs kfree), then the module in the VM (batches, buckets, policies)
bench: setup
	@$(SUBMAKE) -C kmod/host bench
	@vm/run.sh python -m pyckpt.bench

vm-shell: setup
	@vm/run.sh

clean:
	-@$(SUBMAKE) -C kmod clean KVER=$(KVER) >/dev/null 2>&1
	-@$(SUBMAKE) -C kmod/host clean >/dev/null
	rm -rf $(RESULTS) build .hypothesis pyckpt.egg-info pyckpt/_ckpt.c pyckpt/_ckpt*.o \
		pyckpt/_ckpt*.so $(PYSTAMP)

distclean: clean
	rm -rf $(VENV)
