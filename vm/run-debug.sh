#!/usr/bin/env bash
# vm/run-debug.sh [PYTEST ARGS...]: tests/vm (the stateful fuzz included) on
# the debug kernel: build it once (vm/debug-kernel.sh, cached), build ckpt.ko
# against it, then vm/run-tests.sh on it through CKPT_KERNEL_TREE. The guest
# runs rmmod and a kmemleak scan at the end, and vm/klog.py fails the run on
# any KASAN, KFENCE, UBSAN, lockdep, kmemleak, WARNING or BUG report, naming
# the test that was running.
#
# Results in $CKPT_RESULTS (default results/debug/): vm/run-tests.sh's files,
# and debug-build.txt (how long the kernel build took, or that it was cached).
# If the kernel or the module does not build, vm-harness.xml says so (a
# failed case for tests/summary.py) and the exit status is 1.
# Environment: CKPT_DEBUG_CACHE, CKPT_DEBUG_JOBS (vm/debug-kernel.sh), and
# vm/run.sh's; the guest gets CKPT_VM_MEMORY=3G (KASAN's shadow) and
# CKPT_VM_TIMEOUT=3600 unless set.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=${CKPT_RESULTS:-$ROOT/results/debug}
mkdir -p "$RESULTS" && RESULTS=$(cd "$RESULTS" && pwd) || exit 2
rm -f "$RESULTS/debug-build.txt"

# A build step that failed: one failed harness case, so that the closing
# summary line counts it and says why (vm-harness.xml, as vm/run-tests.sh).
broken() { # CASE MESSAGE
	local msg
	echo "vm/run-debug.sh: $2" >&2
	msg=$(printf '%s' "$2" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' \
		-e 's/>/\&gt;/g' -e 's/"/\&quot;/g')
	rm -f "$RESULTS/vm.xml"
	{
		echo '<?xml version="1.0" encoding="utf-8"?>'
		echo '<testsuites><testsuite name="vm-harness" tests="1" failures="1" errors="0" skipped="0">'
		echo "<testcase classname=\"vm.harness\" name=\"$1\"><failure message=\"$msg\"/></testcase>"
		echo '</testsuite></testsuites>'
	} >"$RESULTS/vm-harness.xml"
	exit 1
}

t0=$(date +%s)
dir=$("$ROOT/vm/debug-kernel.sh" --dir) || broken debug_kernel_built "vm/debug-kernel.sh --dir failed"
cached=0
[ -e "$dir/.ckpt-built" ] && cached=1
echo "== debug kernel: vm/debug-kernel.sh ($([ "$cached" = 1 ] && echo cached || echo 'building, ~25 min on 2 cores'))"
tree=$("$ROOT/vm/debug-kernel.sh" | tail -n 1) && [ -e "$tree/.ckpt-built" ] ||
	broken debug_kernel_built "the debug kernel did not build (vm/debug-kernel.sh; log: $dir/build.log)"
t1=$(date +%s)
if [ "$cached" = 1 ]; then
	echo "debug kernel: cached ($tree)"
else
	echo "debug kernel: built in $((t1 - t0)) s ($tree)"
fi | tee "$RESULTS/debug-build.txt"

export CKPT_KERNEL_TREE=$tree
kver=$("$ROOT/vm/kver.sh") || broken debug_kernel_built "cannot tell the release of $tree"
make --no-print-directory -C "$ROOT/kmod" KVER="$kver" >"$RESULTS/kmod-build.log" 2>&1 || {
	tail -n 20 "$RESULTS/kmod-build.log" >&2
	broken debug_module_built "ckpt.ko did not build against $tree (kmod-build.log)"
}

export CKPT_RESULTS=$RESULTS
export CKPT_VM_MEMORY=${CKPT_VM_MEMORY:-3G}
export CKPT_VM_TIMEOUT=${CKPT_VM_TIMEOUT:-3600}
exec "$ROOT/vm/run-tests.sh" "$@"
