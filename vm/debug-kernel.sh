#!/usr/bin/env bash
# vm/debug-kernel.sh [--key|--dir|--configure-only]: build (once) a debug kernel
# from Debian's own source package, linux-source-6.1, with vm/debug.config
# (KASAN, lockdep, UBSAN, KFENCE, kmemleak, ...) on top of virtme-ng's minimal
# config, and print the built tree's path on the last line of stdout. The
# tree is what CKPT_KERNEL_TREE takes (vm/run.sh boots its bzImage, the module
# is built against it).
#
# The build is cached in $CKPT_DEBUG_CACHE (default build/debug-kernel in the
# checkout), in a directory named after the source package's version and the
# hash of vm/debug.config (+ RECIPE below): a changed fragment builds a new
# tree, an unchanged one is reused (a few file tests). Another checkout can
# share a built tree: CKPT_DEBUG_CACHE=/path/to/that/build/debug-kernel.
# An interrupted build resumes where it stopped (make is incremental).
#
#   --key             print the cache key (version-hash) and exit
#   --dir             print the tree's path (built or not) and exit
#   --configure-only  stop after the configuration (for checking the fragment)
#
# Environment: CKPT_DEBUG_CACHE (above), CKPT_DEBUG_JOBS (make -j, default
# nproc), CKPT_DEBUG_NICE (default 19, low priority beside running guests;
# where guests at nice 0 keep both cores busy it barely progresses: 0),
# CKPT_DEBUG_SRC_PKG (default linux-source-6.1), CKPT_DEBUG_CONFIG (the
# fragment, default vm/debug.config); CKPT_DEBUG_SRC_VERSION (the version to
# key on instead of the package's: tests/host/test_harness.py).
# Exit status: 0 built (or cached); 1 the build failed (log in the tree's
# build.log); 2 usage or something missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${CKPT_VENV:-$ROOT/.venv}
FRAGMENT=${CKPT_DEBUG_CONFIG:-$ROOT/vm/debug.config}
CACHE=${CKPT_DEBUG_CACHE:-$ROOT/build/debug-kernel}
PKG=${CKPT_DEBUG_SRC_PKG:-linux-source-6.1}
JOBS=${CKPT_DEBUG_JOBS:-$(nproc)}
NICE=${CKPT_DEBUG_NICE:-19}
# Bump when the steps below change what gets built (it is part of the key).
RECIPE=1
# What building a kernel needs beyond build-essential (vm/setup.sh has that).
BUILD_PKGS=("$PKG" flex bison bc cpio xz-utils libelf-dev libssl-dev git kmod)

say() { echo "debug-kernel: $*" >&2; }
die() {
	echo "debug-kernel: $*" >&2
	exit "${2:-2}"
}

mode=build
case ${1:-} in
"") ;;
--key) mode=key ;;
--dir) mode=dir ;;
--configure-only) mode=configure ;;
*) die "usage: vm/debug-kernel.sh [--key|--dir|--configure-only]" ;;
esac

[ -r "$FRAGMENT" ] || die "no $FRAGMENT"

pkg_version() {
	dpkg-query -W -f='${db:Status-Status} ${Version}' "$1" 2>/dev/null |
		sed -n 's/^installed //p'
}

# The cache key: the source package's version (installed, or else the one
# apt would install, so that --key and --dir work before the install; it is
# the same after), and the hash of the fragment.
find_tree() {
	version=${CKPT_DEBUG_SRC_VERSION:-$(pkg_version "$PKG")}
	if [ -z "$version" ]; then
		version=$(apt-cache policy "$PKG" 2>/dev/null | sed -n 's/^ *Candidate: //p')
		[ -n "$version" ] && [ "$version" != "(none)" ] ||
			die "$PKG: not installed, and apt knows no version of it"
	fi
	hash=$( { echo "recipe $RECIPE"; cat "$FRAGMENT"; } | sha256sum | cut -c1-12)
	key=$(echo "$PKG-$version" | tr -c 'A-Za-z0-9.+\n-' _)-$hash
	TREE=$CACHE/$key
}

# Building needs the source package and the kernel's build tools: installed
# here (vm/setup.sh's apt helper) on a fresh machine.
install_missing() {
	missing=()
	for p in "${BUILD_PKGS[@]}"; do
		[ -n "$(pkg_version "$p")" ] || missing+=("$p")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		say "installing ${missing[*]}"
		"$ROOT/vm/setup.sh" --only "${missing[@]}" >&2 || die "could not install ${missing[*]}"
	fi
}

find_tree
case $mode in
key)
	echo "$key"
	exit 0
	;;
dir)
	echo "$TREE"
	exit 0
	;;
esac

if [ -e "$TREE/.ckpt-built" ]; then
	echo "$TREE"
	exit 0
fi
# not built (or not with this version): install, then key on what is installed
install_missing
find_tree

mkdir -p "$CACHE"
# One build at a time per cache (two `make test` runs, or main and a worktree
# sharing the cache): the second waits, then finds the tree built.
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
	say "another build holds $CACHE/.lock; waiting for it"
	flock 9
fi
if [ -e "$TREE/.ckpt-built" ]; then
	echo "$TREE"
	exit 0
fi

[ -x "$VENV/bin/virtme-configkernel" ] || die "no virtme-configkernel in $VENV (run make setup)"
export PATH="$VENV/bin:$PATH"
LOG=$TREE/build.log
t0=$(date +%s)

# ---- unpack and configure (skipped when a previous run got that far)
if ! [ -e "$TREE/.ckpt-configured" ]; then
	tarball=$(dpkg -L "$PKG" | grep -E '/linux-source-[^/]*\.tar\.xz$' | head -n 1)
	[ -r "$tarball" ] || die "$PKG lists no readable linux-source tarball"
	rm -rf "$TREE" "$TREE.unpack"
	mkdir -p "$TREE.unpack"
	say "unpacking $tarball"
	tar -xJf "$tarball" -C "$TREE.unpack"
	top=$(find "$TREE.unpack" -mindepth 1 -maxdepth 1 -type d)
	[ "$(echo "$top" | wc -l)" = 1 ] && [ -f "$top/Makefile" ] ||
		die "$tarball: expected one top directory with a Makefile"
	mv "$top" "$TREE"
	rmdir "$TREE.unpack"
	cd "$TREE"
	# virtme-ng wants a git repository at the top of a kernel tree
	git init -q .
	{
		echo "== $PKG $version, vm/debug.config $hash, recipe $RECIPE"
		echo "== virtme-configkernel --defconfig --custom vm/debug.config"
	} >"$LOG"
	virtme-configkernel --defconfig --custom "$FRAGMENT" >>"$LOG" 2>&1 ||
		{ tail -n 30 "$LOG" >&2; die "configuration failed (log: $LOG)" 1; }
	# virtme-ng appends its own items after ours (DEBUG_INFO_DWARF_...):
	# ours again, last, so they win
	cat "$FRAGMENT" >>.config
	make olddefconfig >>"$LOG" 2>&1 ||
		{ tail -n 30 "$LOG" >&2; die "make olddefconfig failed (log: $LOG)" 1; }
	# every line of the fragment must hold: a symbol Kconfig dropped (a
	# missing dependency, a renamed option) would silently weaken the checks
	bad=()
	while IFS= read -r line; do
		line=${line%%#*}
		line=${line%"${line##*[![:space:]]}"}
		[ -n "$line" ] || continue
		sym=${line%%=*} val=${line#*=}
		if [ "$val" = n ]; then
			grep -qx "$sym=[ym]" .config && bad+=("$line (.config: $(grep -x "$sym=.*" .config))")
		else
			grep -qxF "$line" .config || bad+=("$line (.config: $(grep -E "^(# )?$sym[= ]" .config || echo absent))")
		fi
	done <"$FRAGMENT"
	if [ "${#bad[@]}" -gt 0 ]; then
		printf 'debug-kernel: not in the final .config: %s\n' "${bad[@]}" >&2
		die "vm/debug.config does not hold after make olddefconfig (fix the fragment)" 1
	fi
	touch .ckpt-configured
	say "configured in $(($(date +%s) - t0)) s: $TREE"
fi
cd "$TREE"
[ "$mode" != configure ] || {
	echo "$TREE"
	exit 0
}

# ---- build: bzImage for vng, modules for virtme-ng's 9p and virtio
say "building with make -j$JOBS at nice $NICE (log: $LOG; ~25 min on 2 idle cores)"
echo "== make -j$JOBS bzImage modules ($(date))" >>"$LOG"
t1=$(date +%s)
if ! nice -n "$NICE" make -j"$JOBS" bzImage modules >>"$LOG" 2>&1; then
	grep -E 'error|Error' "$LOG" | tail -n 20 >&2 || true
	die "the kernel build failed (log: $LOG)" 1
fi
# the module directory virtme-ng boots with (it would make it on first use;
# made here, the tree is complete and can be shared read-only)
virtme-prep-kdir-mods >>"$LOG" 2>&1 || die "virtme-prep-kdir-mods failed (log: $LOG)" 1
t2=$(date +%s)
echo "== built in $((t2 - t1)) s (all: $((t2 - t0)) s) ($(date))" >>"$LOG"
echo "$((t2 - t1))" >.ckpt-build-seconds
touch .ckpt-built
say "built in $((t2 - t1)) s: $TREE"
echo "$TREE"
