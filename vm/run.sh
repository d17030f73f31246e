#!/usr/bin/env bash
# vm/run.sh [CMD...]: boot Debian's installed kernel (or CKPT_KERNEL_TREE's) in QEMU through
# virtme-ng, load the ckpt.ko built for it (build/kmod-$KVER/ckpt.ko), and run
# CMD as root in the checkout with the venv's python first on PATH. CMD's
# output and exit status come back.
# With no CMD (and a terminal): an interactive shell in the guest.
#
# The guest sees the host's root read-only at the same paths (writable
# overlays on /tmp, /etc, /var, ...), so write results to a CKPT_VM_RWDIR.
#
# Environment (all optional):
#   CKPT_KVER=VER         kernel to boot (default: vm/kver.sh's, the newest
#                         6.1); `make build` builds the module for each
#                         kernel of `vm/kver.sh --all`
#   CKPT_KERNEL_TREE=DIR  boot a built kernel tree instead (its bzImage and
#                         modules; bring your own kernel, or the debug
#                         kernel of vm/debug-kernel.sh); the module is
#                         build/kmod-$RELEASE/ckpt.ko (make build builds it)
#   CKPT_KO=FILE          the module to load (default build/kmod-$KVER/ckpt.ko);
#                         the guest sees it as $CKPT_KO too
#   CKPT_VM_TIMEOUT=SECS  kill the guest after this long (default 900)
#   CKPT_VM_KVM=1         use KVM (default TCG: nested KVM hangs here)
#   CKPT_VM_MEMORY=2G     CKPT_VM_CPUS=2
#   CKPT_VM_NO_MODULE=1   boot without loading ckpt.ko
#   CKPT_VM_RWDIR=D1:D2   host directories the guest may write, same paths
#   CKPT_VM_VERBOSE=1     show the guest kernel's console
#   CKPT_VM_CONSOLE=FILE  save the guest kernel's console (warnings and worse)
#   CKPT_VM_FASTFS=0      no cached view of Python, the venv and the checkout
#   CKPT_VM_VNG_ARGS=...  more vng arguments (split on spaces)
#   CKPT_VENV=DIR         the venv (default: .venv in the checkout)
# Other CKPT_* variables are passed on to CMD in the guest.
#
# Exit status: CMD's; 124 if the guest timed out; 125 if the guest could not
# load the module; 255 if the guest died (oops and panic power it off);
# 2 if something is missing on the host.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# CI may start us with no stdin at all; qemu needs something to read
[ -e "/proc/$$/fd/0" ] || exec </dev/null
VENV=${CKPT_VENV:-$ROOT/.venv}
TIMEOUT=${CKPT_VM_TIMEOUT:-900}

die() {
	echo "vm/run.sh: $*" >&2
	exit 2
}

[ -x "$VENV/bin/vng" ] || die "no virtme-ng in $VENV (run make setup)"
# vng runs virtme-run and the guest runs the venv's python: both from PATH
export PATH="$VENV/bin:$PATH"

if [ -n "${CKPT_KERNEL_TREE:-}" ]; then
	# bring your own kernel: vng boots the tree's bzImage with the tree's
	# modules (virtme-ng's .virtme_mods in the tree)
	TREE=$(cd "$CKPT_KERNEL_TREE" 2>/dev/null && pwd) ||
		die "CKPT_KERNEL_TREE=$CKPT_KERNEL_TREE is not a directory"
	[ -r "$TREE/arch/x86/boot/bzImage" ] ||
		die "no $TREE/arch/x86/boot/bzImage: build the tree first (make bzImage modules)"
	KVER=$("$ROOT/vm/kver.sh") || die "cannot tell the release of $TREE"
	KIMG=$TREE
else
	KVER=${CKPT_KVER:-}
	[ -n "$KVER" ] || KVER=$("$ROOT/vm/kver.sh") || die "no kernel to boot"
	KIMG=/boot/vmlinuz-$KVER
	[ -r "$KIMG" ] || die "cannot read $KIMG (is linux-image-$KVER installed? run make setup)"
	[ -d "/lib/modules/$KVER/kernel" ] || die "no /lib/modules/$KVER: virtme-ng needs its 9p and virtio modules"
fi

# The module built for this kernel, so insmod cannot fail on vermagic.
if [ "${CKPT_VM_NO_MODULE:-0}" != 1 ]; then
	KO=${CKPT_KO:-$ROOT/build/kmod-$KVER/ckpt.ko}
	[ -f "$KO" ] || die "$KO is missing (make build, or make -C kmod KVER=$KVER; CKPT_VM_NO_MODULE=1 boots without it)"
	KO=$(cd "$(dirname "$KO")" && pwd)/$(basename "$KO")
	if command -v modinfo >/dev/null; then
		built=$(modinfo -F vermagic "$KO" 2>/dev/null | cut -d' ' -f1) || built=
		[ "$built" = "$KVER" ] || die "$KO was built for '$built', not $KVER"
	fi
	if [ -n "$(find "$ROOT/kmod" "$ROOT/kmod/include/uapi" -maxdepth 1 \
		-name '*.[ch]' -newer "$KO" -print -quit)" ]; then
		echo "vm/run.sh: warning: $KO is older than its sources (make build)" >&2
	fi
	# vm/guest.sh loads it; tests that reload the module find it there too
	export CKPT_KO=$KO
fi

# Modules udev would load at boot that no test needs; they cost ~5 s of the
# ~17 s boot under TCG (kvm alone ~4 s).
NOLOAD=kvm,kvm_amd,kvm_intel,ahci,libahci,libata,sr_mod,cdrom,iTCO_wdt,i6300esb
NOLOAD+=,pcspkr,i2c_i801,lpc_ich,aesni_intel,ghash_clmulni_intel,powernow_k8
NOLOAD+=,serio_raw,joydev,evdev,sg,psmouse

vng=(vng --run "$KIMG" --force-9p
	--memory "${CKPT_VM_MEMORY:-2G}" --cpus "${CKPT_VM_CPUS:-2}"
	--cwd "$ROOT"
	# an oops must end the run at once, not hang it until the timeout
	--append "oops=panic panic=-1 modprobe.blacklist=$NOLOAD"
	# test names go into the kernel log (vm/kmsg_marks.py): unthrottled,
	# and a log large enough to hold them all beside a debug kernel's reports
	--append "printk.devkmsg=on log_buf_len=16M")
if [ "${CKPT_VM_KVM:-0}" = 1 ]; then
	[ -w /dev/kvm ] || die "CKPT_VM_KVM=1 but /dev/kvm is not usable"
else
	vng+=(--disable-kvm)
fi
IFS=: read -r -a rwdirs <<<"${CKPT_VM_RWDIR:-}"
for d in "${rwdirs[@]}"; do
	[ -n "$d" ] || continue
	[ -d "$d" ] || die "CKPT_VM_RWDIR: $d is not a directory"
	vng+=(--rwdir "$(cd "$d" && pwd)")
done
# The root that vng exports is mounted uncached, and Python's imports over it
# cost seconds under TCG. A second export of / lets vm/guest.sh mount the
# trees that only get read (Python, the venv, tests) with cache=loose.
if [ "${CKPT_VM_FASTFS:-1}" = 1 ]; then
	# shellcheck disable=SC2054  # commas inside qemu option values
	vng+=(--qemu-opts=-fsdev
		--qemu-opts=local,id=ckptfs,path=/,security_model=none,readonly=on,multidevs=remap
		--qemu-opts=-device --qemu-opts=virtio-9p-pci,fsdev=ckptfs,mount_tag=ckptroot)
fi
[ "${CKPT_VM_VERBOSE:-0}" != 1 ] || vng+=(--verbose)
# vng sends the kernel console to /dev/null when running a command; a
# virtio console (hvc0; ttyS0 is taken and the 8250 driver has one console)
# keeps warnings, oopses and the panic of a guest that died.
if [ -n "${CKPT_VM_CONSOLE:-}" ] && [ $# -gt 0 ]; then
	: >"$CKPT_VM_CONSOLE" || die "cannot write CKPT_VM_CONSOLE=$CKPT_VM_CONSOLE"
	# shellcheck disable=SC2054  # commas inside qemu option values
	vng+=(--qemu-opts=-chardev "--qemu-opts=file,id=ckptklog,path=$CKPT_VM_CONSOLE"
		--qemu-opts=-device --qemu-opts=virtio-serial-pci,id=ckptvs
		--qemu-opts=-device --qemu-opts=virtconsole,chardev=ckptklog,bus=ckptvs.0
		--append "console=hvc0 loglevel=5")
fi
if [ -n "${CKPT_VM_VNG_ARGS:-}" ]; then
	read -r -a extra <<<"$CKPT_VM_VNG_ARGS"
	vng+=("${extra[@]}")
fi

# The guest's command goes into a script under the host's /tmp, which the
# guest sees (read-only) at the same path: the kernel command line, where
# vng would put it, holds only 2 KiB. CKPT_* variables go along.
tmp=$(mktemp -d)
shq() { # POSIX single quotes
	local s=${1//\'/\'\\\'\'}
	printf "'%s'" "$s"
}
{
	echo '#!/bin/sh'
	printf 'exec env'
	for name in $(compgen -e); do
		[[ $name != CKPT_* ]] || printf ' %s' "$(shq "$name=${!name}")"
	done
	printf ' %s' "$(shq "$ROOT/vm/guest.sh")"
	for a in "$@"; do
		printf ' %s' "$(shq "$a")"
	done
	echo
} >"$tmp/guest-cmd"
chmod 755 "$tmp" "$tmp/guest-cmd"

if [ $# -eq 0 ]; then
	if ! [ -t 0 ] || ! [ -t 1 ]; then
		rm -rf "$tmp"
		die "no CMD and no terminal: give a command to run"
	fi
	# vng's own console shell, started through guest.sh; no timeout
	rc=0
	"${vng[@]}" --shell "$tmp/guest-cmd" || rc=$?
	rm -rf "$tmp"
	exit "$rc"
fi
vng+=(--exec "$tmp/guest-cmd")

# Our own timeout instead of timeout(1): vng runs virtme-run, which runs
# qemu; killing vng alone would leave qemu running, holding our stdout open.
vng_pid=
watchdog_pid=
timed_out=0
# shellcheck disable=SC2329  # reached through trap (on_signal, on_timeout)
descendants() {
	local kids=() c
	read -r -a kids <"/proc/$1/task/$1/children" 2>/dev/null || true
	for c in "${kids[@]}"; do
		echo "$c"
		descendants "$c"
	done
}
# shellcheck disable=SC2329  # reached through trap (on_signal, on_timeout)
kill_guest() {
	local pids i
	[ -n "$vng_pid" ] || return 0
	read -r -a pids <<<"$(descendants "$vng_pid" | tr '\n' ' ')"
	kill -TERM "${pids[@]}" "$vng_pid" 2>/dev/null || true
	# until qemu is gone (vng itself stays a zombie until we wait for it)
	for i in $(seq 50); do
		kill -0 "${pids[@]}" 2>/dev/null || return 0
		[ "$i" != 50 ] || kill -KILL "${pids[@]}" 2>/dev/null || true
		sleep 0.2
	done
}
# shellcheck disable=SC2317,SC2329  # reached through trap
on_signal() {
	kill_guest
	[ -z "$watchdog_pid" ] || kill "$watchdog_pid" 2>/dev/null || true
	[ -z "${tmp:-}" ] || rm -rf "$tmp"
	exit "$1"
}
# shellcheck disable=SC2317,SC2329  # reached through trap
on_timeout() {
	# a guest that ended as the timer fired did not time out
	[ -n "$vng_pid" ] && kill -0 "$vng_pid" 2>/dev/null || return 0
	timed_out=1
	echo "vm/run.sh: guest timed out after ${TIMEOUT}s (CKPT_VM_TIMEOUT), killing it" >&2
	kill_guest
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

# QEMU reopens /proc/self/fd/1 and 2: into a regular file that means a new
# offset at 0 and lost bytes. Hand it pipes unless they are terminals.
out=/dev/stdout err=/dev/stderr cats=()
if ! [ -t 1 ]; then
	mkfifo "$tmp/out"
	cat <"$tmp/out" &
	cats+=($!) out=$tmp/out
fi
if ! [ -t 2 ]; then
	mkfifo "$tmp/err"
	cat <"$tmp/err" >&2 &
	cats+=($!) err=$tmp/err
fi

# explicit <&0: a background job would otherwise read /dev/null
"${vng[@]}" <&0 >"$out" 2>"$err" &
vng_pid=$!

# The timer is a child that signals us: `wait -n PID...` on vng and a sleep
# (bash 5.2) once missed vng's end and waited for the whole timeout. A plain
# `wait PID` cannot miss it; a trapped signal interrupts it (status > 128).
trap on_timeout USR1
(
	trap 'kill "$sp" 2>/dev/null; exit 0' TERM
	sleep "$TIMEOUT" &
	sp=$!
	wait "$sp" && kill -USR1 $$
) </dev/null >/dev/null 2>&1 &
watchdog_pid=$!

rc=0
while :; do
	rc=0
	wait "$vng_pid" || rc=$?
	kill -0 "$vng_pid" 2>/dev/null || break # reaped: rc is vng's status
done
kill "$watchdog_pid" 2>/dev/null || true
wait "$watchdog_pid" 2>/dev/null || true
trap - USR1
[ "$timed_out" = 0 ] || rc=124
# let the last bytes through before we return
[ "${#cats[@]}" -eq 0 ] || wait "${cats[@]}" 2>/dev/null || true
rm -rf "$tmp"
exit "$rc"
