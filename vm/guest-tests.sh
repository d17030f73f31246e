#!/usr/bin/env bash
# Runs inside the guest, started by vm/run-tests.sh through vm/run.sh (which
# loaded ckpt.ko): pytest on tests/vm, then rmmod, then (a kernel with
# kmemleak) a leak scan, then the kernel log, all written into $CKPT_RESULTS,
# a directory shared writable with the host. Markers in the kernel log
# (ckpt-test: ...) tell vm/klog.py which test or phase was running.
# The host judges the run from these files, never from the console.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
R=${CKPT_RESULTS:?CKPT_RESULTS: the results directory}
status=$R/vm-status
: >"$status"
note() { echo "$1=$2" >>"$status"; }

kmsg() { echo "<4>ckpt-test: $*" 2>/dev/null >/dev/kmsg; }

note kernel "$(uname -r)"
# A kernel with kmemleak (the debug kernel): forget what booting leaked, so
# that the scan after rmmod shows only what was allocated since.
KML=/sys/kernel/debug/kmemleak
kmemleak=0
if [ -w "$KML" ] && echo scan 2>/dev/null >"$KML"; then
	echo clear >"$KML"
	kmemleak=1
fi
note kmemleak "$kmemleak"
note t_start "$(date +%s.%N)"
note uptime_start "$(cut -d' ' -f1 /proc/uptime)"
kmsg phase tests
# kmsg_marks (vm/): each test's name into the kernel log, for vm/klog.py
PYTHONPATH="$ROOT/vm${PYTHONPATH:+:$PYTHONPATH}" \
	python -m pytest tests/vm -p no:cacheprovider -p kmsg_marks --junitxml="$R/vm.xml" "$@"
rc=$?
note t_end "$(date +%s.%N)"
note pytest "$rc"

# The module must unload (no context left open, nothing leaked) and report
# on its way out, so the log is taken after rmmod.
kmsg phase rmmod
out=$(rmmod ckpt 2>&1)
note rmmod "$?"
[ -z "$out" ] || echo "rmmod ckpt: $out" >&2
if [ "$kmemleak" = 1 ]; then
	# kmemleak reports nothing younger than 5 s: let the last test's age
	sleep 6
	kmsg phase kmemleak-scan
	echo scan >"$KML"
	# vm/klog.py dates each object from its age at this read
	kmsg phase kmemleak-read
	cat "$KML" >"$R/vm-kmemleak.txt"
	note t_kmemleak "$(date +%s.%N)"
fi
kmsg phase done
note tainted "$(cat /proc/sys/kernel/tainted)"
dmesg >"$R/vm-dmesg.txt" 2>&1
note finished 1
exit "$rc"
