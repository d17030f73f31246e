"""Figures of ckpt.ko measured through /dev/ckpt (run in the VM: make bench).

Each comparison is measured side by side in one run, so the ratios hold
even under TCG, where absolute times are slow:

1. one ioctl per object against the batch forms (what the batches are for);
2. the seeds' fixed 1 << 10 buckets against autogrow, as objects grow: time
   per object and hash probes per lookup (the kernel's own counters);
3. seed 000's question: how long release() keeps restarted tasks waiting
   under each policy, and what is left for close().
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pyckpt.abi import ObjType, Policy, ffi, lib
from pyckpt.device import Context

SIZES = (1_000, 10_000, 100_000)


@contextmanager
def eventfds(n: int) -> Iterator[list[int]]:
    """n distinct open files (eventfds: cheap, and each its own struct file)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, max(hard, n + 64)))
    fds = [os.eventfd(0) for _ in range(n)]
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def per_us(seconds: float, n: int) -> float:
    return seconds / n * 1e6


def obj_args(fds: list[int]) -> Any:
    """struct ckpt_obj_arg[] for lookup_add of each fd, built before timing."""
    arr = ffi.new("struct ckpt_obj_arg[]", len(fds))
    for a, fd in zip(arr, fds):
        a.type = ObjType.FILE
        a.handle = fd
    return arr


def batch_ioctl(ctx: Context, arr: Any) -> float:
    """Time CKPT_IOC_LOOKUP_ADD_BATCH over arr (CKPT_BATCH_MAX a call)."""
    total = 0.0
    size = ffi.sizeof("struct ckpt_obj_arg")
    for start in range(0, len(arr), lib.CKPT_BATCH_MAX):
        b = ffi.new("struct ckpt_batch *")
        b.items = int(ffi.cast("uintptr_t", arr + start))
        b.count = min(lib.CKPT_BATCH_MAX, len(arr) - start)
        b.item_size = size
        total += timed(lambda: ctx.ioctl(lib.CKPT_IOC_LOOKUP_ADD_BATCH, b))  # noqa: B023
    return total


def single_vs_batch(fds: list[int]) -> None:
    n = len(fds)
    arr = obj_args(fds)
    print(f"1. lookup_add of {n} files: one ioctl each vs one batch ioctl")
    with Context() as ctx:
        args = [arr + i for i in range(n)]
        req = lib.CKPT_IOC_LOOKUP_ADD
        single = timed(lambda: [ctx.ioctl(req, a) for a in args])
    with Context() as ctx:
        batch = batch_ioctl(ctx, obj_args(fds))
    print(
        f"   single {per_us(single, n):8.2f} us/object   batch "
        f"{per_us(batch, n):8.2f} us/object   batch is {single / batch:.1f}x faster\n"
    )


def fixed_vs_autogrow(fds: list[int]) -> None:
    print("2. objhash of 1 << 10 buckets, fixed (the seeds) vs autogrow (batch ioctls)")
    print(
        f"   {'objects':>8} | {'fixed us/add':>12} {'probes':>7} | "
        f"{'grow us/add':>12} {'probes':>7} {'buckets':>8} | fixed/grow"
    )
    with Context() as ctx:
        batch_ioctl(ctx, obj_args(fds[: SIZES[0]]))  # warm up, not counted
    for n in SIZES:
        row = []
        for autogrow in (False, True):
            with Context(hash_bits=10, autogrow=autogrow) as ctx:
                add = batch_ioctl(ctx, obj_args(fds[:n]))
                before = ctx.stats()
                batch_ioctl(ctx, obj_args(fds[:n]))  # every one a hit
                after = ctx.stats()
                probes = (after.probes - before.probes) / (
                    after.lookups - before.lookups
                )
                row.append((add, probes, after.nr_buckets))
        (fa, fp, _), (ga, gp, gb) = row
        print(
            f"   {n:8d} | {per_us(fa, n):12.2f} {fp:7.1f} | "
            f"{per_us(ga, n):12.2f} {gp:7.1f} {gb:8d} | {fa / ga:.1f}x"
        )
    print()


def policies(fds: list[int]) -> None:
    n = len(fds)
    print(f"3. seed 000: release() and close() with {n} objects in the hash")
    times = {}
    for policy in (Policy.CLEAR_AT_END, Policy.CLEAR_EARLY, Policy.FREE_UPFRONT):
        ctx = Context(policy=policy, autogrow=True)
        ctx.insert_many([(i + 1, fd) for i, fd in enumerate(fds)])
        release = timed(ctx.release)
        close = timed(ctx.close)
        times[policy] = release
        print(
            f"   {policy.name.lower():13s} release {release * 1e3:8.2f} ms   "
            f"close {close * 1e3:8.2f} ms"
        )
    ratio = times[Policy.FREE_UPFRONT] / times[Policy.CLEAR_EARLY]
    print(
        f"   free-upfront keeps the tasks waiting {ratio:.1f}x as long as clear-early"
    )


def main() -> int:
    if not os.path.exists("/dev/ckpt"):
        print("pyckpt.bench: needs /dev/ckpt (run it in the VM: make bench)")
        return 2
    with eventfds(max(SIZES)) as fds:
        single_vs_batch(fds[:10_000])
        fixed_vs_autogrow(fds)
        policies(fds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
