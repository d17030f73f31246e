# pyckpt: `make demo` and `make test` each run `make setup` first (Debian
# packages, the venv, PyPI packages, the builds; quick when all is done), so
# either works alone from a fresh clone on Debian bookworm, as root.
SHELL := /bin/bash
.DEFAULT_GOAL := build

VENV := .venv
PY := $(VENV)/bin/python
RESULTS := results
# `=`, not `:=`: evaluated when a recipe uses it, after setup may have
# installed the kernels. KVER: the default kernel, vm/run.sh's too (demo,
# bench, vm-shell); KVERS: every kernel built and tested, one VM boot each
# (see vm/kver.sh; CKPT_KVER narrows both, CKPT_KVERS the list).
KVER = $(shell vm/kver.sh)
KVERS = $(shell vm/kver.sh --all)
PYSTAMP := $(VENV)/.pyckpt-installed
SUBMAKE := $(MAKE) --no-print-directory

# CKPT_KERNEL_TREE=DIR (a built kernel tree, bring your own kernel): every
# target builds the module against it and boots its bzImage instead of
# Debian's kernels (vm/kver.sh, vm/run.sh). CKPT_DEBUG_KERNEL=1: `make test`
# also runs tests/vm on the debug kernel (vm/run-debug.sh; .ci/run does not:
# see the README, "The debug kernel").
DEBUG_RESULTS := $(RESULTS)/debug

.PHONY: build setup test test-debug debug-kernel demo bench fuzz vm-shell clean distclean

setup:
	@vm/setup.sh
	@$(SUBMAKE) build

# ckpt.ko for each kernel, in build/kmod-$KVER/ (kmod/Makefile)
build: $(PYSTAMP)
	@kvers='$(KVERS)'; [ -n "$$kvers" ] || { echo "no kernel to build for (vm/kver.sh --all)" >&2; exit 1; }; \
	for k in $$kvers; do $(SUBMAKE) -C kmod KVER=$$k || exit 1; done
	@$(SUBMAKE) -C kmod/host

# the PyPI packages, and the cffi extension pyckpt._ckpt (built from ckpt.h and ckpt_image.h)
$(PYSTAMP): $(wildcard pyproject.toml setup.py cffi_build.py kmod/include/uapi/ckpt.h kmod/include/uapi/ckpt_image.h)
	@test -x $(PY) || { echo "no $(VENV): run make setup" >&2; exit 1; }
	@mkdir -p build
	@echo "pip install -e '.[test,vm]' (log: build/pip.log)"
	@$(PY) -m pip install -e '.[test,vm]' >build/pip.log 2>&1 || \
		{ tail -n 40 build/pip.log >&2; exit 1; }
	@touch $@

# Host core under ASan/UBSan, host pytest, then tests/vm in one VM boot per
# kernel (results/$KVER/). Every phase runs even if one before failed; the
# last line counts them all, each kernel's VM tests under its own label.
test: setup
	@rm -rf $(RESULTS) && mkdir -p $(RESULTS)
	@rc=0; \
	echo "== host: objhash and deferqueue under ASan/UBSan (make -C kmod/host test)"; \
	$(SUBMAKE) -C kmod/host test 2>&1 | tee $(RESULTS)/host-core.txt; \
	[ "$${PIPESTATUS[0]}" = 0 ] || rc=1; \
	echo "== host: pytest (tests/, without tests/vm)"; \
	$(PY) -m pytest tests --ignore=tests/vm -p no:cacheprovider \
		--junitxml=$(RESULTS)/host.xml || rc=1; \
	vm=() labels=" "; \
	for k in $(KVERS); do \
		echo "== vm $$k: vm/run-tests.sh (tests/vm in QEMU, one boot)"; \
		CKPT_KVER=$$k CKPT_RESULTS=$(RESULTS)/$$k vm/run-tests.sh || rc=1; \
		l=vm-$$(echo "$$k" | cut -d. -f1,2); \
		[ -z "$${CKPT_KERNEL_TREE:-}" ] || l=vm-$$k; \
		[[ $$labels != *" $$l "* ]] || l=vm-$$k; \
		labels+="$$l "; \
		vm+=("$$l=$(RESULTS)/$$k/vm.xml" "$$l-harness=$(RESULTS)/$$k/vm-harness.xml"); \
	done; \
	[ "$${#vm[@]}" -gt 0 ] || vm=(vm=$(RESULTS)/no-kernel-found.xml); \
	if [ "$${CKPT_DEBUG_KERNEL:-0}" = 1 ]; then \
		echo "== vm debug kernel: vm/run-debug.sh (KASAN, lockdep, UBSAN, KFENCE, kmemleak)"; \
		CKPT_RESULTS=$(DEBUG_RESULTS) vm/run-debug.sh || rc=1; \
		vm+=("vm-6.1-debug=$(DEBUG_RESULTS)/vm.xml" "vm-6.1-debug-harness=$(DEBUG_RESULTS)/vm-harness.xml"); \
	fi; \
	cat $(RESULTS)/*/debug-build.txt $(RESULTS)/*/vm-time.txt 2>/dev/null; \
	$(PY) tests/summary.py --rc $$rc --core $(RESULTS)/host-core.txt \
		host=$(RESULTS)/host.xml "$${vm[@]}"

# tests/vm on the debug kernel alone (built once, ~25 min, then cached in
# build/debug-kernel or $CKPT_DEBUG_CACHE), with its own closing summary
test-debug: setup
	@rm -rf $(DEBUG_RESULTS) && mkdir -p $(DEBUG_RESULTS)
	@rc=0; CKPT_RESULTS=$(DEBUG_RESULTS) vm/run-debug.sh || rc=1; \
	cat $(DEBUG_RESULTS)/debug-build.txt $(DEBUG_RESULTS)/vm-time.txt 2>/dev/null; \
	$(PY) tests/summary.py --rc $$rc "vm-6.1-debug=$(DEBUG_RESULTS)/vm.xml" \
		"vm-6.1-debug-harness=$(DEBUG_RESULTS)/vm-harness.xml"

# the debug kernel's tree alone (vm/debug-kernel.sh prints its path)
debug-kernel: setup
	@vm/debug-kernel.sh

demo: setup
	@vm/run.sh python -m pyckpt.tools.demo

# figures, not tests: the host core (fixed vs growing buckets up to 10^6,
# clear vs kfree), then the module in the VM (batches, buckets, policies,
# pyckpt against criu on build/crtree's tree, epoll at 10^2..10^4 items).
# criu is installed here (vm/setup.sh --bench), not by make test.
bench: setup build/crtree
	@vm/setup.sh --bench
	@$(SUBMAKE) -C kmod/host bench
	@CKPT_VM_TIMEOUT=$${CKPT_VM_TIMEOUT:-3600} vm/run.sh python -m pyckpt.tools.bench

# the tree both tools checkpoint in `python -m pyckpt.tools.bench criu`: static,
# so that criu's memory dump of it costs little
build/crtree: pyckpt/tools/crtree.c
	@mkdir -p build
	gcc -static -O2 -Wall -o $@ $<

# the ioctl state machine (tests/vm/test_fuzz.py) with a long budget, on the
# default kernel; make test runs it with a short one. FUZZ_EXAMPLES=N to change.
FUZZ_EXAMPLES ?= 500
fuzz: setup
	@CKPT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) CKPT_VM_TIMEOUT=3600 vm/run-tests.sh -k test_fuzz

vm-shell: setup
	@vm/run.sh

clean:
	-@$(SUBMAKE) -C kmod clean KVER=$(KVER) OUT=$(CURDIR)/kmod >/dev/null 2>&1
	-@$(SUBMAKE) -C kmod/host clean >/dev/null
	@# everything under build/ but the debug kernel (25 min to rebuild)
	find build -mindepth 1 -maxdepth 1 ! -name debug-kernel -exec rm -rf {} + 2>/dev/null || true
	rm -rf $(RESULTS) .hypothesis pyckpt.egg-info pyckpt/_ckpt.c pyckpt/_ckpt*.o \
		pyckpt/_ckpt*.so $(PYSTAMP)

distclean: clean
	rm -rf $(VENV) build
