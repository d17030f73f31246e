#!/usr/bin/env bash
# vm/run-tests.sh [PYTEST ARGS...]: boot once, run tests/vm under pytest in
# the guest (vm/guest-tests.sh), rmmod ckpt, save the kernel log, and judge.
# The kernel is $CKPT_KVER (default: vm/kver.sh's, the newest 6.1); `make
# test` runs this once per kernel of `vm/kver.sh --all`.
#
# Results, in $CKPT_RESULTS (default: results/$KVER/ in the checkout), come
# back through a writable share, never from the console:
#   vm.xml          pytest's JUnit XML
#   vm-harness.xml  this script's own checks, as JUnit (for tests/summary.py)
#   vm-dmesg.txt    the guest's kernel log after rmmod
#   vm-kmemleak.txt kmemleak's report after rmmod (kernels with kmemleak)
#   vm-klog.txt     the kernel's reports that vm/klog.py found, and where
#   vm-status       key=value notes from the guest (times, exit codes, taint)
#   vm-console.log  what the guest printed (for people, not parsed)
#   vm-kernel.log   the guest kernel's console, warnings and worse: the oops
#                   or panic of a guest that died is there
#   vm-time.txt     the line with this run's times (boot, tests, total)
#   vm-boot-retry.txt, vm-kernel-boot1.log  only when the first boot died
#                   before anything of ours ran, and was booted once more
# Exits non-zero if a test failed, the guest timed out or died, rmmod failed,
# the kernel log shows a report (vm/klog.py: warning, oops, BUG, KASAN,
# lockdep, UBSAN, list corruption, kmemleak's or the module's leak), or the
# kernel was tainted by anything but an unsigned out-of-tree module.
# Environment: CKPT_RESULTS, and vm/run.sh's (CKPT_VM_TIMEOUT, CKPT_VM_KVM...).
set -uo pipefail

# the whole suite: ~450 s on an idle 2-core TCG guest, ~800 s on a loaded one
# (seen here): vm/run.sh's 900 s guard is too close for a full run
export CKPT_VM_TIMEOUT=${CKPT_VM_TIMEOUT:-1800}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KVER=${CKPT_KVER:-}
[ -n "$KVER" ] || KVER=$("$ROOT/vm/kver.sh") || exit 2
export CKPT_KVER=$KVER
RESULTS=${CKPT_RESULTS:-$ROOT/results/$KVER}
mkdir -p "$RESULTS" && RESULTS=$(cd "$RESULTS" && pwd) || exit 2
rm -f "$RESULTS"/vm.xml "$RESULTS"/vm-harness.xml "$RESULTS"/vm-dmesg.txt \
	"$RESULTS"/vm-status "$RESULTS"/vm-console.log "$RESULTS"/vm-kernel.log \
	"$RESULTS"/vm-time.txt "$RESULTS"/vm-kernel-boot1.log "$RESULTS"/vm-boot-retry.txt \
	"$RESULTS"/vm-kmemleak.txt "$RESULTS"/vm-klog.txt

# The kernel log is judged by vm/klog.py: any report (KASAN, KFENCE, UBSAN,
# lockdep, WARNING, BUG, Oops, list corruption, a stall, "ckpt: leaked", and
# kmemleak's objects on a kernel that has it) fails the run, named after the
# test that was running (markers the guest writes to the log). The taint
# messages of an unsigned out-of-tree module are expected and match none.
# /proc/sys/kernel/tainted bits allowed: O (out-of-tree) and E (unsigned)
TAINT_OK=$(((1 << 12) | (1 << 13)))

boot() {
	CKPT_RESULTS=$RESULTS CKPT_VM_RWDIR="$RESULTS${CKPT_VM_RWDIR:+:$CKPT_VM_RWDIR}" \
		CKPT_VM_CONSOLE=$RESULTS/vm-kernel.log "$ROOT/vm/run.sh" "$ROOT/vm/guest-tests.sh" "$@" </dev/null 2>&1 |
		tee "$RESULTS/vm-console.log"
	rc=${PIPESTATUS[0]}
}

t0=$(date +%s.%N)
boot "$@"
# A guest kernel that dies while booting, before the guest ran a line of
# ours (no vm-status) and with no module loaded, is TCG's, not ours: 6.12's
# text patching under -smp 2 TCG has died once in sched_clock_cpu (int3).
# Boot once more, keeping the first console; anything later is judged.
if [ ! -s "$RESULTS/vm-status" ] && grep -qE 'Kernel panic|Oops' "$RESULTS/vm-kernel.log" 2>/dev/null &&
	! grep -E '^.*Modules linked in:' "$RESULTS/vm-kernel.log" | grep -q ckpt; then
	mv "$RESULTS/vm-kernel.log" "$RESULTS/vm-kernel-boot1.log"
	echo "vm/run-tests.sh: the $KVER guest died while booting, before ckpt.ko or any test ran" \
		"(see vm-kernel-boot1.log); booting it once more" | tee "$RESULTS/vm-boot-retry.txt" >&2
	boot "$@"
fi
t1=$(date +%s.%N)

declare -A st=()
if [ -f "$RESULTS/vm-status" ]; then
	while IFS='=' read -r k v; do
		st[$k]=$v
	done <"$RESULTS/vm-status"
fi

# Each check becomes a JUnit test case, so tests/summary.py counts it.
cases=() fails=0
check() { # NAME OK|failure-message
	local name=$1 msg=$2
	if [ "$msg" = OK ]; then
		cases+=("<testcase classname=\"vm.harness\" name=\"$name\"/>")
	else
		fails=$((fails + 1))
		echo "vm/run-tests.sh: FAILED $name: $msg" >&2
		msg=$(printf '%s' "$msg" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' \
			-e 's/>/\&gt;/g' -e 's/"/\&quot;/g')
		cases+=("<testcase classname=\"vm.harness\" name=\"$name\"><failure message=\"$msg\"/></testcase>")
	fi
}

case $rc in
124) why="guest timed out (CKPT_VM_TIMEOUT=${CKPT_VM_TIMEOUT}s)" ;;
125) why="guest could not load ckpt.ko (see vm-console.log)" ;;
255) why="guest died before its command ended (oops or panic? see vm-console.log)" ;;
*) why="guest did not finish its script (vm/run.sh exit $rc)" ;;
esac
[ "${st[finished]:-}" = 1 ] && [ "$rc" != 124 ] && why=OK
check guest_completed "$why"
if [ -n "${st[kernel]:-}" ]; then
	if [ "${st[kernel]}" = "$KVER" ]; then
		check kernel_booted OK
	else
		check kernel_booted "the guest ran ${st[kernel]}, not $KVER"
	fi
fi
if [ "$why" != OK ] && [ -s "$RESULTS/vm-kernel.log" ]; then
	echo "--- last lines of the guest kernel's console (vm-kernel.log):" >&2
	tail -n 40 "$RESULTS/vm-kernel.log" >&2
fi

if [ -n "${st[pytest]:-}" ]; then
	case ${st[pytest]} in
	0 | 1) check pytest_ran OK ;; # failures are counted from vm.xml
	5) check pytest_ran "pytest collected no test in tests/vm" ;;
	*) check pytest_ran "pytest exited with status ${st[pytest]} (usage or internal error)" ;;
	esac
fi

if [ -n "${st[rmmod]:-}" ]; then
	if [ "${st[rmmod]}" = 0 ]; then
		check rmmod_ckpt OK
	else
		check rmmod_ckpt "rmmod ckpt failed (status ${st[rmmod]}): a context or reference left behind?"
	fi
fi

# a guest that died left no vm-dmesg.txt: judge its console instead
klog=$RESULTS/vm-dmesg.txt
[ -f "$klog" ] || klog=$RESULTS/vm-kernel.log
if [ -f "$klog" ]; then
	# vm-klog.txt: every report with its first lines, for people
	python3 "$ROOT/vm/klog.py" "$klog" --kmemleak "$RESULTS/vm-kmemleak.txt" \
		>"$RESULTS/vm-klog.txt" 2>&1
	bad=$(python3 "$ROOT/vm/klog.py" --tsv "$klog" --kmemleak "$RESULTS/vm-kmemleak.txt" 2>/dev/null)
	krc=$?
	if [ "$krc" = 0 ]; then
		check dmesg_clean OK
	elif [ -z "$bad" ]; then
		check dmesg_clean "vm/klog.py could not read ${klog##*/} (status $krc)"
	else
		n=$(printf '%s\n' "$bad" | wc -l)
		check dmesg_clean "$n kernel report(s) in ${klog##*/}, first: $(printf '%s\n' "$bad" |
			head -n 3 | awk -F'\t' '{printf "%s in %s: %s; ", $1, $2, $3}')(all: vm-klog.txt)"
		echo "--- kernel reports (vm/klog.py; vm-klog.txt has their first lines):" >&2
		printf '%s\n' "$bad" | awk -F'\t' '{print "  " $1 " in " $2 ": " $3}' >&2
	fi
fi

# a kernel with kmemleak must have scanned, or the leak check did not happen
if [ "${st[kmemleak]:-0}" = 1 ]; then
	if [ -f "$RESULTS/vm-kmemleak.txt" ]; then
		check kmemleak_scanned OK
	else
		check kmemleak_scanned "kmemleak was on but the guest never read its scan"
	fi
fi

if [ -n "${st[tainted]:-}" ]; then
	t=${st[tainted]}
	if ((t & ~TAINT_OK)); then
		check kernel_taint "kernel tainted $t (allowed: O and E, $TAINT_OK); see Documentation/admin-guide/tainted-kernels.rst"
	else
		check kernel_taint OK
	fi
fi

{
	echo '<?xml version="1.0" encoding="utf-8"?>'
	echo "<testsuites><testsuite name=\"vm-harness\" tests=\"${#cases[@]}\" failures=\"$fails\" errors=\"0\" skipped=\"0\">"
	printf '%s\n' "${cases[@]}"
	echo '</testsuite></testsuites>'
} >"$RESULTS/vm-harness.xml"

# Times: the host clock before vng; the guest's own clock (set from the
# host's RTC at boot) around pytest.
awk -v k="$KVER" -v t0="$t0" -v t1="$t1" -v s="${st[t_start]:-}" -v e="${st[t_end]:-}" 'BEGIN {
	if (s != "" && e != "")
		printf "vm %s: boot %.1f s, tests %.1f s, rmmod+dmesg+poweroff %.1f s, total %.1f s\n",
			k, s - t0, e - s, t1 - e, t1 - t0
	else if (s != "")
		printf "vm %s: boot %.1f s, then the guest ended or was stopped %.1f s into the tests\n",
			k, s - t0, t1 - s
	else
		printf "vm %s: total %.1f s (the guest never started pytest)\n", k, t1 - t0
}' | tee "$RESULTS/vm-time.txt"

[ "$fails" -eq 0 ] && [ "${st[pytest]:-1}" = 0 ]
