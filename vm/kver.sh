#!/usr/bin/env bash
# Print the Debian kernel version to build against and boot: $CKPT_KVER if
# set, else the newest installed 6.1 amd64 kernel (the one the project
# targets), else the newest amd64 one. Only generic "-amd64" flavours count:
# the cloud kernel has no 9p, so virtme-ng cannot boot it.
set -euo pipefail

if [ -n "${CKPT_KVER:-}" ]; then
	echo "$CKPT_KVER"
	exit 0
fi

mapfile -t all < <(
	find /boot -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' 2>/dev/null |
		sed -n 's/^vmlinuz-//p' |
		grep -E '^[0-9]+\.[0-9]+\.[0-9]+-[0-9]+-amd64$' | sort -V
)
if [ "${#all[@]}" -eq 0 ]; then
	echo "vm/kver.sh: no Debian amd64 kernel in /boot (run make setup)" >&2
	exit 1
fi
best=
for k in "${all[@]}"; do
	case $k in 6.1.*) best=$k ;; esac
done
echo "${best:-${all[-1]}}"
