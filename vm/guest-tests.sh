#!/usr/bin/env bash
# Runs inside the guest, started by vm/run-tests.sh through vm/run.sh (which
# loaded ckpt.ko): pytest on tests/vm, then rmmod, then the kernel log, all
# written into $CKPT_RESULTS, a directory shared writable with the host.
# The host judges the run from these files, never from the console.
set -u

R=${CKPT_RESULTS:?CKPT_RESULTS: the results directory}
status=$R/vm-status
: >"$status"
note() { echo "$1=$2" >>"$status"; }

note kernel "$(uname -r)"
note t_start "$(date +%s.%N)"
note uptime_start "$(cut -d' ' -f1 /proc/uptime)"
python -m pytest tests/vm -p no:cacheprovider --junitxml="$R/vm.xml" "$@"
rc=$?
note t_end "$(date +%s.%N)"
note pytest "$rc"

# The module must unload (no context left open, nothing leaked) and report
# on its way out, so the log is taken after rmmod.
out=$(rmmod ckpt 2>&1)
note rmmod "$?"
[ -z "$out" ] || echo "rmmod ckpt: $out" >&2
note tainted "$(cat /proc/sys/kernel/tainted)"
dmesg >"$R/vm-dmesg.txt" 2>&1
note finished 1
exit "$rc"
