#!/usr/bin/env bash
# vm/setup.sh [--bench]: install what building, testing and the VM need on a
# Debian bookworm host (with --bench also criu, for `make bench`), and
# create the venv. vm/setup.sh --only PKG...: install just those packages
# (the apt helper for vm/debug-kernel.sh). Idempotent, and quick when all is there
# (a dpkg query and a few file tests), so `make test` can run it every time.
# The PyPI packages and the cffi extension are installed by the Makefile,
# which knows when they are out of date.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${CKPT_VENV:-$ROOT/.venv}
LOG=$ROOT/build/setup.log

# build-essential: gcc and make for ckpt.ko, kmod/host and the cffi module;
# kmod: insmod/rmmod/modinfo (the guest uses the host's root);
# busybox-static: virtme-ng builds its initramfs with it;
# python3-bpfcc: the real bcc, for Debian's /usr/bin/python3 only;
# the two kernels `make test` covers, with their headers: bookworm's default
# 6.1 and its 6.12 (vm/kver.sh --all finds their versions).
PKGS=(build-essential kmod qemu-system-x86 busybox-static
	linux-image-amd64 linux-headers-amd64
	linux-image-6.12-amd64 linux-headers-6.12-amd64
	python3-venv python3-dev python3-bpfcc)

say() { echo "setup: $*"; }
die() {
	echo "setup: $*" >&2
	exit 1
}

installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

apt_install() {
	[ "$(id -u)" = 0 ] || die "need root to install: $* (sudo apt-get install $*)"
	mkdir -p "$(dirname "$LOG")"
	say "apt-get install $* (log: build/setup.log)"
	export DEBIAN_FRONTEND=noninteractive
	if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "$@"; } \
		</dev/null >>"$LOG" 2>&1; then
		tail -n 30 "$LOG" >&2
		die "apt-get install failed"
	fi
}

# `make bench` only (vm/setup.sh --bench): criu, the baseline that
# `python -m pyckpt.tools.bench criu` measures pyckpt against; `make test` does
# not need it.
case "${1:-}" in
"") ;;
--bench) PKGS+=(criu) ;;
--only)
	shift
	[ $# -gt 0 ] || die "usage: vm/setup.sh --only PKG..."
	missing=()
	for p in "$@"; do
		installed "$p" || missing+=("$p")
	done
	[ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"
	exit 0
	;;
*) die "usage: vm/setup.sh [--bench | --only PKG...]" ;;
esac

missing=()
for p in "${PKGS[@]}"; do
	installed "$p" || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"

# Each kernel we boot must have headers of the same version to build against
# (an older image may sit beside the one the meta packages point at).
mapfile -t kvers < <("$ROOT/vm/kver.sh" --all; "$ROOT/vm/kver.sh")
[ "${#kvers[@]}" -gt 0 ] || die "no kernel found (vm/kver.sh)"
headers=()
for k in $(printf '%s\n' "${kvers[@]}" | sort -u); do
	[ -e "/lib/modules/$k/build/Makefile" ] || headers+=("linux-headers-$k")
done
[ "${#headers[@]}" -eq 0 ] || apt_install "${headers[@]}"

# A venv from Debian's python3 with the system site-packages: bcc comes only
# from Debian (PyPI's "bcc" is another project). Remake it if it came from
# another interpreter (the python3 first on PATH may be a pyenv build).
cfg=$VENV/pyvenv.cfg
if ! { [ -x "$VENV/bin/python" ] && grep -qx 'home = /usr/bin' "$cfg" 2>/dev/null &&
	grep -qx 'include-system-site-packages = true' "$cfg"; }; then
	[ ! -e "$VENV" ] || say "remaking $VENV (not from /usr/bin/python3 with system site-packages)"
	rm -rf "$VENV"
	say "creating $VENV from /usr/bin/python3"
	/usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
