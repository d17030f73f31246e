#!/usr/bin/env bash
# vm/kver.sh [--all]: the Debian kernel versions to build against and boot.
#
# Without --all, one version: $CKPT_KVER if set, else the newest installed
# 6.1 amd64 kernel (Debian bookworm's default, the one the project targets),
# else the newest amd64 one. `make demo`, `make bench` and vm/run.sh use it.
#
# With --all, one line per kernel that `make build` and `make test` cover:
# $CKPT_KVERS (space-separated) if set, else $CKPT_KVER if set, else the
# newest installed kernel of each series (6.1, 6.12, ...), oldest series first.
#
# Only generic "-amd64" flavours count: the cloud kernel has no 9p, so
# virtme-ng cannot boot it, and rt is a different kernel. Debian names them
# 6.1.0-56-amd64 (bookworm's ABI number) or 6.12.117+deb12-amd64 (newer
# series, backports): X.Y.Z, one optional -tag or +tag, then -amd64.
# CKPT_BOOT_DIR (default /boot) is where to look (tests/host/test_harness.py).
#
# CKPT_KERNEL_TREE=DIR (a built kernel tree: bring your own kernel) overrides
# all of this: both forms print that tree's release, the only kernel.
set -euo pipefail

all=0
case ${1:-} in
--all) all=1 ;;
"") ;;
*)
	echo "usage: vm/kver.sh [--all]" >&2
	exit 2
	;;
esac

# Bring your own kernel: a built tree (CKPT_KERNEL_TREE) is the one kernel,
# named by its release (what uname -r says in the guest).
if [ -n "${CKPT_KERNEL_TREE:-}" ]; then
	rel_file=$CKPT_KERNEL_TREE/include/config/kernel.release
	if ! [ -s "$rel_file" ]; then
		echo "vm/kver.sh: CKPT_KERNEL_TREE=$CKPT_KERNEL_TREE is not a built kernel tree (no include/config/kernel.release)" >&2
		exit 1
	fi
	rel=$(cat "$rel_file")
	if [ -n "${CKPT_KVER:-}" ] && [ "$CKPT_KVER" != "$rel" ]; then
		echo "vm/kver.sh: CKPT_KVER=$CKPT_KVER, but CKPT_KERNEL_TREE is $rel" >&2
		exit 1
	fi
	echo "$rel"
	exit 0
fi

if [ "$all" = 1 ] && [ -n "${CKPT_KVERS:-}" ]; then
	read -r -a list <<<"$CKPT_KVERS"
	printf '%s\n' "${list[@]}"
	exit 0
fi
if [ -n "${CKPT_KVER:-}" ]; then
	echo "$CKPT_KVER"
	exit 0
fi

mapfile -t found < <(
	find "${CKPT_BOOT_DIR:-/boot}" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' 2>/dev/null |
		sed -n 's/^vmlinuz-//p' |
		grep -E '^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.~]+)?-amd64$' | sort -V
)
if [ "${#found[@]}" -eq 0 ]; then
	echo "vm/kver.sh: no Debian amd64 kernel in ${CKPT_BOOT_DIR:-/boot} (run make setup)" >&2
	exit 1
fi

# newest of each X.Y series: the list is sorted, so the last one seen wins
declare -A newest=()
series=()
for k in "${found[@]}"; do
	s=$(echo "$k" | cut -d. -f1,2)
	[ -n "${newest[$s]:-}" ] || series+=("$s")
	newest[$s]=$k
done

if [ "$all" = 1 ]; then
	for s in "${series[@]}"; do
		echo "${newest[$s]}"
	done
else
	echo "${newest[6.1]:-${found[-1]}}"
fi
