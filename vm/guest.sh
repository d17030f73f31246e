#!/usr/bin/env bash
# Runs inside the guest, started by vm/run.sh: load ckpt.ko ($CKPT_KO, which
# vm/run.sh checked was built for this kernel; else build/kmod-$(uname -r)/),
# give CMD the checkout as its working directory and the venv's python, then
# run it.
# With no CMD: an interactive shell set up the same way.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${CKPT_VENV:-$ROOT/.venv}
cd "$ROOT" || exit 125

export PATH="$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export VIRTUAL_ENV="$VENV"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# the host root is shared read-only: nothing may expect to write under it
export PYTHONDONTWRITEBYTECODE=1
export HOME=/tmp/ckpt-home
mkdir -p "$HOME"
export CKPT_IN_VM=1

# virtme-ng-init leaks its virtio-serial ports as fds 3-5; close them so a
# process tree built by CMD holds only what it opened itself.
for fd in "/proc/$$/fd/"*; do
	n=${fd##*/}
	if [ "$n" -gt 2 ] && [[ $(readlink "$fd" 2>/dev/null) == /dev/vport* ]]; then
		eval "exec $n>&-"
	fi
done

# vm/run.sh exports / a second time as "ckptroot": mounted with cache=loose,
# it serves the read-only trees that Python imports from out of the guest's
# page cache instead of a host round trip per lookup (imports 3x faster).
# The host must not change them during the run; results/ stays uncached.
fast=/run/ckpt-root
if grep -qsx ckptroot /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag &&
	mkdir -p "$fast" &&
	mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=512000,access=any \
		ckptroot "$fast"; then
	for d in /usr/lib/python3 /usr/lib/python3.11 /usr/local/lib/python3.11 \
		/usr/src "$VENV" "$ROOT/pyckpt" "$ROOT/tests"; do
		[ -d "$fast$d" ] && mount --bind "$fast$d" "$d"
	done
fi

if [ "${CKPT_VM_NO_MODULE:-0}" != 1 ]; then
	export CKPT_KO=${CKPT_KO:-$ROOT/build/kmod-$(uname -r)/ckpt.ko}
	# vm/klog.py: kernel reports before this line are the boot's, not ours
	echo "<4>ckpt-test: phase insmod" 2>/dev/null >/dev/kmsg
	# debug=1: the TEST_* ioctls and fail_nth, which the tests use
	if ! out=$(insmod "$CKPT_KO" debug=1 2>&1); then
		echo "vm/run.sh: insmod $CKPT_KO failed in the guest ($(uname -r)): $out" >&2
		dmesg | tail -n 20 >&2
		exit 125
	fi
	# devtmpfs creates the node at misc_register(); udev may still be busy
	for _ in $(seq 50); do
		[ -c /dev/ckpt ] && break
		sleep 0.1
	done
	if [ ! -c /dev/ckpt ]; then
		echo "vm/run.sh: ckpt.ko loaded but /dev/ckpt did not appear" >&2
		exit 125
	fi
fi

if [ $# -eq 0 ]; then
	echo "pyckpt guest: $(uname -r), ckpt.ko $( [ -c /dev/ckpt ] && echo loaded || echo 'not loaded'), cwd $ROOT; exit or ^D powers off"
	export PS1="(vm) \\w# "
	exec bash --norc -i
fi
exec "$@"
