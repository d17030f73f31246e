"""Figures of ckpt.ko measured through /dev/ckpt (run in the VM: make bench).

Each comparison is measured side by side in one run, so the ratios hold
even under TCG, where absolute times are slow:

1. one ioctl per object against the batch forms (what the batches are for);
2. the seeds' fixed 1 << 10 buckets against autogrow, as objects grow: time
   per object and hash probes per lookup (the kernel's own counters);
3. the half-closed pipe fix's question: how long release() keeps restarted tasks waiting
   under each policy, and what is left for close();
4. a whole checkpoint and restart of 10 tasks with 1,000 fds each: the
   downtime (frozen time), image size, checkpoint and restart times;
5. what taking the recorded credentials costs a restart: the same image
   restarted to the barrier with and without that step, alternately.

6. pyckpt against CRIU on the same tree (pyckpt/tools/crtree.c: 10 tasks x 720 and
   x 1,000 fds): frozen time, checkpoint wall time, restart until the tasks
   run, and the ratios (CRIU's failure at 1,000 is reported, not hidden);
7. cr-tests' epoll/sk10k: one epoll set of 10^2, 10^3, 10^4 items, time per
   item at checkpoint and restart (flat: linear);
8. the image codec on a 10 tasks x 720 fds image: encode, decode and show
   against the commit before issue 11's codec work (needs no /dev/ckpt).

9. the freezers side by side (signal and cgroup, alternating, fresh
   trees of 10 and 100 tasks): the freeze (every task stopped and its
   threads counted), the check that no task ran, the thaw, the downtime.

`python -m pyckpt.tools.bench cr` runs only 4, `freeze [--sizes 10,100] [--rounds 5]` 9, `python -m pyckpt.tools.bench creds` 5,
`criu [--tasks 3 --sizes 100 --rounds 3]` 6, `epoll [--sizes 100,1000]` 7 and
`codec [--rounds N]` 8;
`python -m pyckpt.tools.bench resume [--sizes 100,1000] [--out DIR]` answers the
delayed free's question on real restarts (table, and with --out a JSON and a PNG plot);
`resume --replot JSON` redraws the PNG from a run's JSON.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import resource
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pyckpt import syscalls
from pyckpt.abi import ObjType, Policy, ffi, lib
from pyckpt.device import Context
from pyckpt.kinds.epoll import epolls
from pyckpt.kinds.eventfd import Eventfd
from pyckpt.kinds.pipe import pipes

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
    print(
        f"3. clear before release: release() and close() with {n} objects in the hash"
    )
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


TASKS, FDS_PER_TASK = 10, 1000


def _open_fds(n: int, scratch: str) -> None:
    """n fds: by fours, a pipe with data in it, an eventfd, a regular file."""
    for i in range(n // 4):
        _, w = os.pipe()
        os.write(w, b"buffered %d" % i)
        os.eventfd(i)
        os.open(scratch, os.O_RDONLY)


def _tree_task(gate: int, own: int, scratch: str) -> None:
    """A task of the benchmark tree: own more fds of its own, then wait."""
    _open_fds(own, scratch)
    os.close(gate)
    while True:
        signal.pause()


def checkpoint_restart() -> None:
    """10 tasks x 1,000 fds: half inherited from the root (shared open files,
    deduplicated by the objhash), half each task's own."""
    from pyckpt.api import restart
    from pyckpt.checkpointer import checkpoint  # kill without writing a file

    print(
        f"4. checkpoint and restart: {TASKS} tasks x {FDS_PER_TASK} fds "
        "(half shared from the root, half their own)"
    )
    scratch = f"/tmp/bench-cr-{os.getpid()}"
    with open(scratch, "wb") as f:
        f.write(b"x" * 4096)
    gate_r, gate_w = os.pipe()
    root = os.fork()
    if root == 0:
        try:
            os.close(gate_r)
            resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
            gate = fcntl.fcntl(gate_w, fcntl.F_DUPFD_CLOEXEC, 3000)
            os.closerange(0, 3000)
            half = FDS_PER_TASK // 2
            _open_fds(half, scratch)  # every task inherits these
            for _ in range(TASKS - 1):
                if os.fork() == 0:
                    _tree_task(gate, half, scratch)
            _tree_task(gate, half, scratch)
        finally:
            os._exit(1)
    os.close(gate_w)
    os.read(gate_r, 1)  # EOF: every task has its fds
    os.close(gate_r)
    try:
        res = checkpoint(root, kill=True)
        os.waitpid(root, 0)
        data = res.image.to_bytes()
        t0 = time.perf_counter()
        r = restart(res.image, argv=["sleep", "1000"])
        t_restart = time.perf_counter() - t0
        r.kill()
    finally:
        os.unlink(scratch)
    print(
        f"   {res.nr_tasks} tasks, {res.nr_fds} fds, {res.nr_files} open files, "
        f"{len(pipes(res.image))} pipes"
    )
    print(f"   downtime (frozen)   {res.downtime * 1e3:9.1f} ms")
    print(f"   checkpoint, total   {res.collect_time * 1e3:9.1f} ms")
    print(f"   image size          {len(data) / 1024:9.1f} KiB")
    print(f"   restart (to release){t_restart * 1e3:9.1f} ms")


def credentials(ntasks: int = 16, rounds: int = 5) -> None:
    """Restart time to the barrier with and without the credential step
    (umask, 16 limits, groups, gids, uids, the /proc check, PDEATHSIG)."""
    import pyckpt.restarter as rs
    from pyckpt.image import Image
    from pyckpt.model import RLIM_INFINITY, Head, Task

    print(f"5. credentials: restart of {ntasks} tasks (uid/gid 65534, 3 groups,")
    print("   16 limits) to the barrier, with and without taking them")
    lims = []
    for r in range(16):
        cur, top = resource.getrlimit(r)
        lims.append(
            (RLIM_INFINITY if cur < 0 else cur, RLIM_INFINITY if top < 0 else top)
        )
    ids = dict.fromkeys(
        ("ruid", "euid", "suid", "fsuid", "rgid", "egid", "sgid", "fsgid"), 65534
    )
    tasks = [
        Task(
            100 + i,
            100 if i else 1,
            100,
            100,
            "t",
            ["/bin/true"],
            "/",
            groups=[4, 24, 65533],
            umask=0o027,
            rlimits=lims,
            **ids,
        )
        for i in range(ntasks)
    ]
    u = os.uname()
    img = Image(Head(time.time(), u.sysname, u.release, u.version, u.machine), tasks)
    real = rs._take_credentials
    times: dict[str, list[float]] = {"with": [], "without": []}
    try:
        for _ in range(rounds):
            for mode in ("with", "without"):
                rs._take_credentials = real if mode == "with" else (lambda t: None)
                t0 = time.perf_counter()
                r = rs.restart(img, release=False)
                times[mode].append(time.perf_counter() - t0)
                r.kill()
    finally:
        rs._take_credentials = real
    w, wo = (sorted(times[m])[rounds // 2] for m in ("with", "without"))
    print(f"   without   {wo * 1e3:9.1f} ms (median of {rounds})")
    print(
        f"   with      {w * 1e3:9.1f} ms  ({w / wo:.2f}x, "
        f"{(w - wo) / ntasks * 1e3:+.2f} ms per task)"
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # 6.1's fdinfo does not say whether an eventfd is a semaphore: restart
    # warns once per eventfd, and printing thousands of warnings would be
    # timed with the restarts
    warnings.filterwarnings("ignore", r".*EFD_SEMAPHORE", RuntimeWarning)
    if args[:2] == ["resume", "--replot"] and len(args) == 3:
        # the PNG again from a run's JSON, anywhere (the guest builds
        # matplotlib's font cache at each boot: minutes under TCG)
        import json

        with open(args[2]) as f:
            data = json.load(f)
        png = os.path.splitext(args[2])[0] + ".png"
        plot_resume(data, png)
        print(f"wrote {png}")
        return 0
    if args[:1] == ["codec"]:
        return codec(
            rounds=int(args[args.index("--rounds") + 1]) if "--rounds" in args else 3
        )
    if not os.path.exists("/dev/ckpt"):
        print("pyckpt.tools.bench: needs /dev/ckpt (run it in the VM: make bench)")
        return 2
    if args == ["creds"]:
        credentials()
        return 0
    if args[:1] == ["resume"]:
        out = args[args.index("--out") + 1] if "--out" in args else None
        sizes = RESUME_SIZES
        if "--sizes" in args:
            sizes = tuple(int(x) for x in args[args.index("--sizes") + 1].split(","))
        resume(sizes, out)
        return 0
    if args[:1] == ["criu"]:
        criu(**_size_opts(args[1:], tasks=CRIU_TASKS, sizes=CRIU_SIZES, rounds=3))
        return 0
    if args[:1] == ["freeze"]:
        freezers(**_size_opts(args[1:], sizes=FREEZE_SIZES, rounds=5))
        return 0
    if args[:1] == ["epoll"]:
        epoll_scale(**_size_opts(args[1:], sizes=EPOLL_SIZES))
        return 0
    if args != ["cr"]:
        with eventfds(max(SIZES)) as fds:
            single_vs_batch(fds[:10_000])
            fixed_vs_autogrow(fds)
            policies(fds)
        print()
    checkpoint_restart()
    if args != ["cr"]:
        print()
        credentials()
        print()
        criu()
        print()
        epoll_scale()
        print()
        codec()
    return 0


def _size_opts(args: list[str], **defaults: Any) -> dict[str, Any]:
    """--sizes N,N,... and --tasks N (where the section has tasks)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pyckpt.tools.bench SECTION")
    ap.add_argument(
        "--sizes",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=defaults["sizes"],
        help="comma-separated sizes (fds per task; items for epoll)",
    )
    if "tasks" in defaults:
        ap.add_argument("--tasks", type=int, default=defaults["tasks"])
    if "rounds" in defaults:
        ap.add_argument("--rounds", type=int, default=defaults["rounds"])
    return vars(ap.parse_args(args))


# ---- the image codec at 10 tasks x 720 fds: `python -m pyckpt.tools.bench codec` ------


def codec_image(ntasks: int = 10, nfds: int = 720) -> Any:
    """A synthetic Image of the checkpoint bench's tree, as the checkpointer
    fills it: the root opens nfds fds by fours (a pipe's two ends with data
    buffered, an eventfd, a regular file); each other task inherits the
    root's first half and opens as many of its own."""
    from pyckpt.abi import FileKind, FMode
    from pyckpt.image import Fd, File, Head, Image, Task
    from pyckpt.kinds.pipe import Pipe, pipes

    image = Image(
        Head(
            1.7e9,
            "Linux",
            "6.12.117",
            "#1 SMP",
            "x86_64",
            lib.CKPT_FORMAT_VERSION,
            lib.CKPT_ABI_VERSION,
        )
    )
    next_ref = iter(range(1, 1 << 30))

    def four(fd: int, out: list[Fd]) -> None:
        pipe, r, w, efd, reg = (next(next_ref) for _ in range(5))
        pipes(image)[pipe] = Pipe(pipe, 65536, b"x" * 64)
        for ref, mode, flags in ((r, FMode.READ, 0), (w, FMode.WRITE, 1)):
            image.files[ref] = File(ref, FileKind.PIPE, flags, mode, pipe_objref=pipe)
        image.files[efd] = File(
            efd, FileKind.EVENTFD, 0o2, FMode.READ | FMode.WRITE, extra=Eventfd(fd)
        )
        image.files[reg] = File(
            reg,
            FileKind.REG,
            0,
            FMode.READ,
            pos=fd,
            path=f"/tmp/bench/file-{reg}",
            st_dev=0x801,
            st_ino=1000 + reg,
            st_mode=0o100644,
            st_size=4096,
        )
        out += [Fd(fd + i, ref) for i, ref in enumerate((r, w, efd, reg))]

    for i in range(ntasks):
        pid = 1000 + i
        task = Task(pid, 1000 if i else 1, 1000, 1000, "tree", ["tree", str(i)], "/")
        if i == 0:
            for fd in range(3, 3 + nfds, 4):
                four(fd, task.fds)
        else:
            task.fds = [Fd(fd.fd, fd.objref) for fd in image.tasks[0].fds[: nfds // 2]]
            for fd in range(3 + nfds // 2, 3 + nfds, 4):
                four(fd, task.fds)
        image.tasks.append(task)
    return image


# the commit before issue 11's codec work: the reference the codec is timed
# against, from a git-archived copy of its pyckpt/ in a child interpreter
CODEC_BASE = "ad5b6eb"

_CODEC_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import pyckpt.image as im
from pyckpt import show
assert im.__file__.startswith(sys.argv[1]), im.__file__
data = open(sys.argv[2], "rb").read()
rounds = int(sys.argv[3])
def best(fn):
    times = []
    for _ in range(rounds):
        t = time.perf_counter(); out = fn(); times.append(time.perf_counter() - t)
    return min(times), out
dec, img = best(lambda: im.Image.from_bytes(data))
enc, again = best(img.to_bytes)
shw, text = best(lambda: show.summary(im.Image.from_bytes(data)))
print(json.dumps({"encode": enc, "decode": dec, "show": shw, "same": again == data,
                  "show_text": text}))
"""


def _best(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def codec(base: str = CODEC_BASE, rounds: int = 3) -> int:
    """Image encode, decode and `show` of the 10 x 720 image: this tree's
    codec against the one at ``base`` (git archive of its pyckpt/, run in a
    child interpreter with this build's cffi extension), best of ``rounds``,
    side by side in one run.  Needs no module: runs on the host too."""
    import json
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from pyckpt import show
    from pyckpt.image import Image

    image = codec_image()
    enc, data = _best(image.to_bytes, rounds)
    dec, again = _best(lambda: Image.from_bytes(data), rounds)
    if again != image:
        print("codec: the image does not round-trip")
        return 1
    shw, text = _best(lambda: show.summary(Image.from_bytes(data)), rounds)
    nrec = sum(1 + len(t.fds) * 2 for t in image.tasks) + len(pipes(image)) + 3
    print(f"8. image codec, 10 tasks x 720 fds: {len(data):,} bytes, {nrec:,} records")

    pkg = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="pyckpt-codec-") as tmp:
        try:
            tar = subprocess.run(
                ["git", "-C", str(pkg.parent), "archive", base, "pyckpt"],
                check=True,
                capture_output=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"   reference {base} unavailable ({e}): this tree only")
            print(
                f"   encode {enc * 1e3:.1f} ms, decode {dec * 1e3:.1f} ms, "
                f"show {shw * 1e3:.1f} ms"
            )
            return 0
        subprocess.run(["tar", "-x", "-C", tmp], input=tar, check=True)
        for so in pkg.glob("_ckpt*.so"):
            shutil.copy(so, Path(tmp) / "pyckpt")
        img_path = Path(tmp) / "image"
        img_path.write_bytes(data)
        out = subprocess.run(
            [sys.executable, "-c", _CODEC_CHILD, tmp, str(img_path), str(rounds)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    old = json.loads(out)
    print(f"   {'':8} {'before (' + base + ')':>16} {'now':>12} {'ratio':>8}")
    for name, now in (("encode", enc), ("decode", dec), ("show", shw)):
        was = old[name]
        print(f"   {name:8} {was * 1e3:13.1f} ms {now * 1e3:9.1f} ms {was / now:7.1f}x")
    both_was, both_now = old["encode"] + old["decode"], enc + dec
    print(
        f"   {'enc+dec':8} {both_was * 1e3:13.1f} ms {both_now * 1e3:9.1f} ms "
        f"{both_was / both_now:7.1f}x   (best of {rounds}; same bytes: "
        f"{old['same']}, same show: {old['show_text'] == text})"
    )
    return 0


# ---- clear before release, answered on real restarts: `python -m pyckpt.tools.bench resume` ------------

RESUME_SIZES = (100, 1_000, 10_000, 100_000)
# name -> (number of tasks, deep: each task a child of the previous one, the
# largest size run: a restart of 10^5 objects takes ~50 s under TCG, so only
# one shape goes that far and the whole run stays near 6 minutes)
SHAPES: dict[str, tuple[int, bool, int]] = {
    "few tasks, many files": (2, False, 100_000),
    "many tasks, few files": (64, False, 10_000),
    "deep (chain of 16)": (16, True, 10_000),
    "flat (root + 15)": (16, False, 10_000),
}
SHARED = 4  # files every task holds (inherited from the root, as a tree does)


def resume_image(n: int, tasks: int, deep: bool) -> Any:
    """An image of n eventfds over a tree of the given shape: SHARED files
    held by every task, the rest spread evenly, each task its own."""
    from pyckpt.abi import FileKind, FMode
    from pyckpt.image import Fd, File, Head, Image, Task

    uts = os.uname()
    img = Image(Head(time.time(), uts.sysname, uts.release, uts.version, uts.machine))
    rw = FMode.READ | FMode.WRITE
    for ref in range(1, n + 1):
        img.files[ref] = File(ref, FileKind.EVENTFD, os.O_RDWR, rw, extra=Eventfd(ref))
    shared = min(SHARED, n)
    own = list(range(shared + 1, n + 1))
    base = 1000
    for i in range(tasks):
        pid = base + i
        ppid = (pid - 1 if deep else base) if i else 1
        mine = own[i::tasks]
        refs = list(range(1, shared + 1)) + mine
        fds = [Fd(3 + k, ref) for k, ref in enumerate(refs)]
        img.tasks.append(Task(pid, ppid, base, base, "bench", ["sleep"], "/", fds))
    return img


def resume_once(n: int, tasks: int, deep: bool, policy: Policy) -> dict[str, float]:
    """Restart once with every task at the barrier, then time release():
    the release ioctl (clear or free per policy: what the policy changes) and
    the whole step to "released" (the ioctl, then SIGUSR1 to every task),
    and the teardown that follows (what the policy left for later)."""
    from pyckpt.restarter import (
        restart,  # the form with a timeout: wide tables are slow
    )

    img = resume_image(n, tasks, deep)
    # a stub's fd numbers must fit under the hard limit (root may raise it)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n + 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1024, n + 1024))
    t0 = time.perf_counter()
    r = restart(img, policy=policy, argv=["sleep", "600"], release=False, timeout=600)
    restored = time.perf_counter() - t0
    ioctl = 0.0
    release_ioctl = r.context.release

    def timed_ioctl() -> None:
        nonlocal ioctl
        ioctl = timed(release_ioctl)

    r.context.release = timed_ioctl  # type: ignore[method-assign]
    try:
        release = timed(r.release)
        close = timed(r.teardown)
    finally:
        r.kill()
    return {
        "restore_s": restored,
        "ioctl_ms": ioctl * 1e3,
        "release_ms": release * 1e3,
        "close_ms": close * 1e3,
    }


def best_of(n: int, tasks: int, deep: bool, policy: Policy) -> dict[str, float]:
    """The fastest of a few restarts (fewer for large n): the guest's vCPUs
    are host threads, and a run preempted by the host only ever gets slower."""
    runs = [resume_once(n, tasks, deep, policy) for _ in range(_reps(n))]
    out = {k: min(r[k] for r in runs) for k in runs[0]}
    out["runs"] = len(runs)
    return out


def _reps(n: int) -> int:
    return 3 if n <= 1_000 else 2 if n <= 10_000 else 1


def resume(sizes: tuple[int, ...] = RESUME_SIZES, out_dir: str | None = None) -> dict:
    """The delayed free's question: the time from "all tasks restored" to "tasks
    released" under each policy, for each size and tree shape, side by side."""
    order = (Policy.CLEAR_AT_END, Policy.CLEAR_EARLY, Policy.FREE_UPFRONT)
    names = {p: p.name.lower().replace("_", "-") for p in order}
    print(
        "clear before release: the release step per policy, ms: the ioctl (clear/free) | all "
        "restored -> released (ioctl + letting every task go) | teardown after"
    )
    cols = " ".join(f"{names[p]:>12}" for p in order)
    print(
        f"{'shape':22} {'objects':>7} | ioctl {cols} | free/early | released {cols}"
        f" | close {cols}"
    )
    resume_once(100, 2, False, Policy.CLEAR_EARLY)  # warm up: imports, page cache
    rows = []
    for shape, (tasks, deep, largest) in SHAPES.items():
        for n in (n for n in sizes if n <= largest):
            res = {names[p]: best_of(n, tasks, deep, p) for p in order}

            def col(key: str, res: dict = res) -> str:
                return " ".join(f"{res[names[p]][key]:12.2f}" for p in order)

            ratio = res["free-upfront"]["ioctl_ms"] / res["clear-early"]["ioctl_ms"]
            print(
                f"{shape:22} {n:7d} | ioctl {col('ioctl_ms')} | {ratio:10.1f} | "
                f"released {col('release_ms')} | close {col('close_ms')}",
                flush=True,
            )
            rows.append(
                {
                    "shape": shape,
                    "tasks": tasks,
                    "deep": deep,
                    "objects": n,
                    "policies": res,
                }
            )
    data = {"kernel": os.uname().release, "rows": rows}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        import json

        path = os.path.join(out_dir, "resume.json")
        with open(path, "w") as f:
            json.dump(data, f, indent=1)
        png = os.path.join(out_dir, "resume.png")
        plot_resume(data, png)
        print(f"wrote {path} and {png}")
    return data


def plot_resume(data: dict, path: str) -> None:
    """One panel per shape: release time against objects, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r["shape"] for r in data["rows"]))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), sharex=True, sharey=True)
    styles = {"clear-at-end": "o-", "clear-early": "s-", "free-upfront": "^-"}
    colors = {
        "clear-at-end": "tab:blue",
        "clear-early": "tab:green",
        "free-upfront": "tab:red",
    }
    for ax, shape in zip(axes.flat, shapes, strict=False):
        rows = [r for r in data["rows"] if r["shape"] == shape]
        xs = [r["objects"] for r in rows]
        for pol, style in styles.items():
            ys = [r["policies"][pol]["ioctl_ms"] for r in rows]
            ax.plot(xs, ys, style, color=colors[pol], label=f"{pol}: release ioctl")
            tot = [r["policies"][pol]["release_ms"] for r in rows]
            ax.plot(
                xs,
                tot,
                style,
                color=colors[pol],
                alpha=0.3,
                label=f"{pol}: all tasks released",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(shape)
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("objects in the hash")
    for ax in axes[:, 0]:
        ax.set_ylabel("ms")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(
        f"clear before release: release cost per policy (ckpt.ko, {data['kernel']}, TCG guest)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---- pyckpt against CRIU on one tree: `python -m pyckpt.tools.bench criu` -------------------

CRIU_TASKS = 10
CRIU_SIZES = (720, 1_000)  # fds per task; CRIU fails at 1,000 (pipes with data)
_CRTREE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crtree.c")


def crtree_binary() -> str:
    """build/crtree (make bench builds it, static), or a build into /tmp when
    it is missing or older than its source (the guest's checkout is read-only)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    built = os.path.join(root, "build", "crtree")
    src_mtime = os.stat(_CRTREE).st_mtime
    if os.path.exists(built) and os.stat(built).st_mtime >= src_mtime:
        return built
    out = f"/tmp/pyckpt-crtree-{int(src_mtime)}"
    if not os.path.exists(out):
        tmp = f"{out}.{os.getpid()}"
        subprocess.run(["gcc", "-static", "-O2", "-o", tmp, _CRTREE], check=True)
        os.rename(tmp, out)
    return out


def tree_pids(root: int) -> list[int]:
    """root and its descendants (/proc/PID/task/PID/children), root first."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def subreaper(on: bool) -> None:
    """PR_SET_CHILD_SUBREAPER: orphaned descendants come back to us."""
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, int(on))


def nr_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class CrTree:
    """A crtree (pyckpt/tools/crtree.c) started detached: its own session, stdio on
    /dev/null, so that neither tool meets a terminal. `tasks` tasks, each
    with exactly 3 + `fds` fds once the constructor returns."""

    def __init__(self, binary: str, tasks: int, fds: int, scratch: str) -> None:
        import subprocess

        self.tasks, self.fds = tasks, fds
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [binary, str(tasks), str(fds), scratch, str(w)],
                pass_fds=(w,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(w)
        self.root = self.proc.pid
        try:
            import select

            deadline = time.monotonic() + 300
            while True:  # EOF: every task closed it, all fds open
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([r], [], [], left)[0]:
                    raise RuntimeError(f"crtree {self.root}: not built in 300 s")
                if not os.read(r, 4096):
                    break
        finally:
            os.close(r)
        self.pids = tree_pids(self.root)
        self.check(self.pids)

    def check(self, pids: list[int]) -> None:
        """pids is a tree as built: `tasks` tasks, each with 3 + fds fds."""
        counts = {p: nr_fds(p) for p in pids}
        want = 3 + self.fds
        if len(pids) != self.tasks or set(counts.values()) != {want}:
            raise RuntimeError(
                f"not the tree built: {len(pids)} tasks (want {self.tasks}), "
                f"fds per task {sorted(set(counts.values()))} (want {want})"
            )


def kill_and_reap(pids: list[int]) -> None:
    """SIGKILL pids and reap them: we are their subreaper (or parent)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    left = set(pids)
    deadline = time.monotonic() + 30
    while left and time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            left.discard(pid)
        else:
            left = {p for p in left if os.path.exists(f"/proc/{p}")}
            time.sleep(0.01)


_CRIU_STAT = re.compile(r"^(Frozen|Restore|Freezing) time:\s*(\d+)\s*us", re.MULTILINE)


def parse_criu(text: str) -> dict[str, float]:
    """criu's --display-stats lines: {"frozen": s, "restore": s, ...}."""
    return {m[1].lower(): int(m[2]) / 1e6 for m in _CRIU_STAT.finditer(text)}


_CRIU_SUMMARY = re.compile(r"FAILED|failed with")
# at -v2 a line starts with "Error (file:line)"; higher levels put a
# timestamp "(00.012345) " before it
_CRIU_ERROR = re.compile(r"^(?:\(\s*[\d.]+\)\s*)?(Error \(.*?)\s*$", re.MULTILINE)


def criu_error(text: str) -> str:
    """What made criu fail: the last Error line before its own summary of
    the failure ("Dumping FAILED", "... failed with -1"); a successful
    run's log has harmless Error lines too (its tun and ip checks)."""
    errors = [m[1] for m in _CRIU_ERROR.finditer(text)]
    cause = ""
    for line in errors:
        if _CRIU_SUMMARY.search(line):
            break
        cause = line
    if cause or errors:
        return cause or errors[0]
    lines = [x for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else "no output"


def _criu(args: list[str], d: str, log: str) -> tuple[int, float, str]:
    """Run criu with its stats on stdout into d/log.out and its log in d/log:
    (status, wall seconds, stats + log). Files, not pipes: the restored tasks
    must hold nothing of ours."""
    import subprocess

    with open(os.path.join(d, f"{log}.out"), "w") as out:
        t0 = time.perf_counter()
        p = subprocess.run(
            ["criu", *args, "-D", d, "-v2", "--display-stats", "-o", log],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
        wall = time.perf_counter() - t0
    text = ""
    for name in (f"{log}.out", log):
        with contextlib.suppress(FileNotFoundError), open(os.path.join(d, name)) as f:
            text += f.read()
    return p.returncode, wall, text


def _pyckpt_run(binary: str, tasks: int, fds: int, scratch: str) -> dict[str, Any]:
    import pyckpt

    tree = CrTree(binary, tasks, fds, scratch)
    img = f"/tmp/bench-criu-{os.getpid()}.img"
    try:
        # thawed once collected, then written (kill=True would write it
        # while frozen, before the kill); killed here, as criu dump does
        t0 = time.perf_counter()
        res = pyckpt.checkpoint(tree.root, output=img)
        wall = time.perf_counter() - t0
        kill_and_reap(tree.pids)
        t0 = time.perf_counter()
        r = pyckpt.restart(img, argv=[binary, "pause"])
        restart = time.perf_counter() - t0
        try:
            new = [r.pids[p] for p in tree.pids]
            _wait_exec(new, os.path.basename(binary))
            tree.check(tree_pids(new[0]))
        finally:
            r.kill()
    finally:
        kill_and_reap(tree.pids)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(img)
    return {
        "frozen": res.downtime,
        "wall": wall,
        "restart": restart,
        "files": res.nr_files,
        "pipes": len(pipes(res.image)),
    }


def _wait_exec(pids: list[int], comm: str) -> None:
    """Every pid runs comm (restarted tasks exec it once released)."""
    deadline = time.monotonic() + 60
    for pid in pids:
        while True:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == comm[:15]:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"restarted task {pid} never ran {comm}")
            time.sleep(0.01)


def _criu_run(binary: str, tasks: int, fds: int, scratch: str) -> dict[str, Any]:
    import shutil
    import tempfile

    tree = CrTree(binary, tasks, fds, scratch)
    d = tempfile.mkdtemp(prefix="bench-criu-", dir="/tmp")  # writable in the guest
    out: dict[str, Any] = {}
    try:
        rc, wall, text = _criu(["dump", "-t", str(tree.root)], d, "dump.log")
        if rc != 0:
            out["error"] = f"dump failed ({rc}): {criu_error(text)}"
            return out
        out["wall"] = wall
        out["frozen"] = parse_criu(text).get("frozen")
        kill_and_reap(tree.pids)  # dumped and killed: reap before the pids return
        rc, wall, text = _criu(["restore", "-d"], d, "restore.log")
        if rc != 0:
            out["error"] = f"restore failed ({rc}): {criu_error(text)}"
            return out
        out["restore_wall"] = wall
        out["restore"] = parse_criu(text).get("restore")
        # the same pids, alive, with their fds
        tree.check(tree_pids(tree.root))
    finally:
        kill_and_reap(tree.pids)
        shutil.rmtree(d, ignore_errors=True)
    return out


def _criu_version() -> str:
    import subprocess

    try:
        p = subprocess.run(
            ["criu", "--version"], check=False, capture_output=True, text=True
        )
    except FileNotFoundError:
        return ""
    m = re.search(r"Version:\s*(\S+)", p.stdout)
    return m[1] if m else p.stdout.strip()


def _median(values: list[float]) -> float | None:
    import statistics

    return statistics.median(values) if values else None


def criu(
    tasks: int = CRIU_TASKS, sizes: tuple[int, ...] = CRIU_SIZES, rounds: int = 3
) -> None:
    """The same tree (pyckpt/tools/crtree.c) checkpointed and restarted by pyckpt
    and by CRIU, one fresh tree per tool and round, the tools alternating;
    each figure the median of its rounds (TCG's times swing from one run
    to the next), with the spread below."""
    version = _criu_version()
    print(
        f"6. pyckpt against CRIU {version or '(not installed: vm/setup.sh --bench)'}:"
        f" crtree, {tasks} tasks x F fds (half inherited from the root: pipes with"
    )
    print("   data, eventfds, a regular file), started detached; ratio = pyckpt/CRIU;")
    print(f"   each figure the median of {rounds} rounds, the tools alternating")
    binary = crtree_binary()
    scratch = f"/tmp/bench-crtree-{os.getpid()}"
    with open(scratch, "wb") as f:
        f.write(b"x" * 4096)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(sizes) * tasks + 1024  # the restarter holds every file at once
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))
    # orphans (criu kills and restores trees; its restored root outlives it)
    # come back to us, so that every task is reaped and its pid free again
    subreaper(True)
    print(f"   {'tree':>9} | {'':28} {'pyckpt':>10} {'CRIU':>10} {'ratio':>7}")
    try:
        for fds in sizes:
            ps: list[dict[str, Any]] = []
            cs: list[dict[str, Any]] = []
            error = None if version else "criu is not installed (vm/setup.sh --bench)"
            for _ in range(rounds):
                ps.append(_pyckpt_run(binary, tasks, fds, scratch))
                if error is None:  # a failure repeats itself: not run again
                    cs.append(_criu_run(binary, tasks, fds, scratch))
                    error = cs[-1].get("error")
            if error:
                cs = []

            def med(runs: list[dict[str, Any]], key: str) -> float | None:
                return _median([r[key] for r in runs if r.get(key) is not None])

            rows = [
                ("frozen", "frozen", "frozen"),
                ("checkpoint, wall", "wall", "wall"),
                ("restart until the tasks run", "restart", "restore_wall"),
                ("  (CRIU's own Restore time)", None, "restore"),
            ]
            label = f"{tasks} x {fds}"
            for what, pk, ck in rows:
                pv = med(ps, pk) if pk else None
                cv = med(cs, ck)
                pt = f"{pv:9.2f}s" if pv is not None else f"{'':10}"
                ct = f"{cv:9.2f}s" if cv is not None else f"{'-':>10}"
                ratio = f"{pv / cv:6.2f}x" if pv and cv else f"{'':7}"
                print(f"   {label:>9} | {what:28} {pt} {ct} {ratio}")
                label = ""
            spread = ", ".join(
                f"{name} {min(v):.2f}-{max(v):.2f}s"
                if len(v) > 1
                else f"{name} {v[0]:.2f}s"
                for name, v in (
                    ("pyckpt", [p["frozen"] for p in ps]),
                    ("CRIU", [c["frozen"] for c in cs if c.get("frozen")]),
                )
                if v
            )
            print(f"   {'':>9} | frozen over {len(ps)} round(s): {spread}")
            print(
                f"   {'':>9} | pyckpt: {ps[0]['files']} open files, "
                f"{ps[0]['pipes']} pipes" + (f"; CRIU {error}" if error else "")
            )
    finally:
        subreaper(False)
        os.unlink(scratch)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ---- cr-tests' epoll/sk10k: `python -m pyckpt.tools.bench epoll` ------------------------------

EPOLL_SIZES = (100, 1_000, 10_000)


FREEZE_SIZES = (10, 100)  # tasks
FREEZE_FDS = 20  # fds per task: the freeze's cost is per task, not per fd


def freezers(sizes: tuple[int, ...] = FREEZE_SIZES, rounds: int = 5) -> None:
    """The signal and cgroup freezers on the same tree, one fresh crtree per
    round, the freezers alternating: the time of each step of theirs inside
    a checkpoint (timed by wrapping the steps), medians of the rounds."""
    from pyckpt import freeze as fz
    from pyckpt.checkpointer import checkpoint

    print(
        f"9. freezers: crtree, N tasks x {FREEZE_FDS} fds, checkpointed (no "
        f"image written) with each freezer, alternating; medians of {rounds}"
    )
    binary = crtree_binary()
    scratch = f"/tmp/bench-freeze-{os.getpid()}"
    with open(scratch, "wb") as f:
        f.write(b"x" * 4096)
    steps = ("freeze", "verify", "thaw")
    names = ("signal", "cgroup")
    real = {(c, m): getattr(c, m) for c in fz.FREEZER_CLASSES.values() for m in steps}
    own = {(c, m) for c, m in real if m in c.__dict__}
    got: dict[str, list[float]] = {}

    def timing(cls: type, step: str) -> Callable[..., Any]:
        fn = real[(cls, step)]

        def timed(self: Any, *a: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(self, *a)
            finally:
                got.setdefault(step, []).append(time.perf_counter() - t0)

        return timed

    subreaper(True)
    try:
        for c, m in real:
            setattr(c, m, timing(c, m))
        for n in sizes:
            runs: dict[str, list[dict[str, float]]] = {f: [] for f in names}
            for r in range(rounds):
                for f in names if r % 2 == 0 else names[::-1]:
                    tree = CrTree(binary, n, FREEZE_FDS, scratch)
                    try:
                        got.clear()
                        res = checkpoint(tree.root, freezer=f)
                    finally:
                        kill_and_reap(tree.pids)
                    one = {s: sum(got.get(s, [0.0])) for s in steps}
                    one["downtime"] = res.downtime
                    runs[f].append(one)
            print(f"   {n} tasks        " + "".join(f"{f:>12}" for f in names))
            for s in (*steps, "downtime"):
                med = {f: _median([x[s] for x in runs[f]]) or 0.0 for f in names}
                print(
                    f"   {s:<16}"
                    + "".join(f"{med[f] * 1e3:9.1f} ms" for f in names)
                    + f"   cgroup/signal {med['cgroup'] / max(med['signal'], 1e-9):.2f}x"
                )
    finally:
        for (c, m), fn in real.items():
            if (c, m) in own:
                setattr(c, m, fn)
            else:
                delattr(c, m)  # inherited: the base class's again
        subreaper(False)
        os.unlink(scratch)


def _epoll_tree(n: int) -> int:
    """A task whose one epoll watches n eventfds (all anonymous files: the
    worst case for a search by inode); its pid once it is set up."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            import select

            os.close(r)
            resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, n + 64))
            keep = fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, n + 32)
            os.closerange(0, n + 32)
            ep = select.epoll()
            for i in range(n):
                ep.register(os.eventfd(i), select.EPOLLIN | select.EPOLLOUT)
            os.close(keep)
            while True:
                signal.pause()
        finally:
            os._exit(1)  # never back into the bench, whatever happened
    os.close(w)
    os.read(r, 1)  # EOF: set up (or failed: the checkpoint says so)
    os.close(r)
    return pid


def epoll_scale(sizes: tuple[int, ...] = EPOLL_SIZES) -> None:
    """One epoll set of n items, checkpointed and restarted: time per item,
    for the whole of each and for the epoll step alone (matching items at
    checkpoint, adding them at restart), and the kcmp calls of the match
    (the kernel's ep_find_tfd() walks the epoll's items from the first to
    the one with that fd number: each kcmp is linear in the items)."""
    import pyckpt
    import pyckpt.kinds.epoll as ek

    print("7. cr-tests epoll/sk10k: one epoll set of n eventfds, time per item (us)")
    print(
        f"   {'items':>6} | {'frozen':>8} {'ckpt':>8} {'restart':>8} | "
        f"{'match items':>11} {'of which kcmp':>13} {'add items':>9}"
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * max(sizes) + 1024  # a stub holds its fds and their copies
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need)))
    steps = {"match": 0.0, "kcmp": 0.0, "add": 0.0}
    collect, restore, kcmp = (
        ek.EpollKind.collect,
        ek._restore_epolls,
        ek._kcmp_epoll_tfd,
    )

    def timed_kcmp(*a: int) -> bool:
        t0 = time.perf_counter()
        try:
            return kcmp(*a)
        finally:
            steps["kcmp"] += time.perf_counter() - t0

    def timed_collect(self: Any, col: Any) -> None:
        t0 = time.perf_counter()
        collect(self, col)
        steps["match"] += time.perf_counter() - t0

    def timed_restore(*a: Any) -> None:
        t0 = time.perf_counter()
        restore(*a)
        steps["add"] += time.perf_counter() - t0

    ek.EpollKind.collect = timed_collect  # type: ignore[method-assign]
    ek._restore_epolls = timed_restore
    ek._kcmp_epoll_tfd = timed_kcmp
    per: dict[int, dict[str, float]] = {}
    try:
        for n in sizes:
            steps.update(match=0.0, kcmp=0.0, add=0.0)
            pid = _epoll_tree(n)
            try:
                t0 = time.perf_counter()
                res = pyckpt.checkpoint(pid)
                wall = time.perf_counter() - t0
            finally:
                kill_and_reap([pid])
            (items,) = [len(e.items) for e in epolls(res.image).values()]
            if items != n:
                raise RuntimeError(f"epoll of {n} items checkpointed with {items}")
            t0 = time.perf_counter()
            r = pyckpt.restart(res.image, argv=["sleep", "1000"], release=False)
            restart = time.perf_counter() - t0
            r.kill()
            row = {
                "frozen": res.downtime / n * 1e6,
                "ckpt": wall / n * 1e6,
                "restart": restart / n * 1e6,
                "match": steps["match"] / n * 1e6,
                "kcmp": steps["kcmp"] / n * 1e6,
                "add": steps["add"] / n * 1e6,
            }
            per[n] = row
            print(
                f"   {n:6d} | {row['frozen']:8.1f} {row['ckpt']:8.1f} "
                f"{row['restart']:8.1f} | {row['match']:11.1f} {row['kcmp']:13.1f} "
                f"{row['add']:9.1f}",
                flush=True,
            )
    finally:
        ek.EpollKind.collect = collect  # type: ignore[method-assign]
        ek._restore_epolls = restore
        ek._kcmp_epoll_tfd = kcmp
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    lo, hi = min(per), max(per)
    if lo != hi:
        ratio = " ".join(
            f"{k} {per[hi][k] / per[lo][k]:.2f}x" for k in per[lo] if per[lo][k]
        )
        print(f"   per item, {hi} items vs {lo}: {ratio} (1x: linear)")
        py = {n: per[n]["match"] - per[n]["kcmp"] for n in (lo, hi)}
        print(
            f"   the match without its kcmp calls: {py[lo]:.1f} -> {py[hi]:.1f} "
            f"us per item ({py[hi] / py[lo]:.2f}x)"
        )


if __name__ == "__main__":
    sys.exit(main())
