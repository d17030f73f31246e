"""python -m pyckpt.tools.demo: the module at work, narrated (run in the VM by make demo).

1. objects are deduplicated: a dup'd fd, a forked child's fd and the two ends
   of a pipe map onto objrefs the way linux-cr's objhash did;
2. release clears the hash: every reference dropped, entries on the free list;
3. the half-closed pipe race under each policy: does the reader see
   EOF right after release (the tasks run), or only at teardown?
4. a live process tree checkpointed (pyckpt.checkpoint) and restarted
   (pyckpt.restart) under each policy (pyckpt repro halfpipe): the restarted
   reader gets the bytes that were in flight, then EOF at once or only when
   the context goes; the restarted writer gets EPIPE at once or writes into
   a pipe that "briefly re-opened".

Exits 0 when everything behaved as described, 1 otherwise, 2 without /dev/ckpt.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pyckpt import (
    Context,
    DeviceMissingError,
    ObjType,
    Policy,
    kcmp_file,
    pidfd_getfd,
)
from pyckpt.tools.repro import halfpipe

POLICY_NAMES = {
    Policy.CLEAR_AT_END: "clear-at-end  (before the patch)",
    Policy.CLEAR_EARLY: "clear-early   (v2 patch, default)",
    Policy.FREE_UPFRONT: "free-upfront  (clear and kfree)",
}


class Demo:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        print(f"    {'ok ' if ok else 'UNEXPECTED'}  {what}")
        if not ok:
            self.failures.append(what)


def section(title: str) -> None:
    print(f"\n== {title} ==")


def reader(r: int) -> str:
    """What a task reading the pipe sees now (the fd is non-blocking)."""
    try:
        data = os.read(r, 1)
    except BlockingIOError:
        return "blocks"  # a writer still exists somewhere
    return "EOF" if data == b"" else "data"


def stats_line(st: Any) -> str:
    return (
        f"nr_objs={st.nr_objs} nr_free={st.nr_free} "
        f"state={st.state!r} buckets={st.nr_buckets}"
    )


def dedup(d: Demo) -> None:
    section("1. objects are deduplicated (checkpoint side, lookup_add)")
    ctx = Context()  # first: without /dev/ckpt, no child is left waiting
    r, w = os.pipe2(os.O_CLOEXEC)
    dup = os.dup(r)
    gate_r, gate_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only holds its inherited copy of the pipe
        os.close(gate_w)
        os.read(gate_r, 1)
        os._exit(0)
    os.close(gate_r)
    pidfd = os.pidfd_open(pid)
    theirs = pidfd_getfd(pidfd, r)  # the way checkpoint collects a task's fds
    with ctx:
        a = ctx.lookup_add(r)
        print(
            f"  {f'read end, fd {r}:':24}objref {a.objref} first={a.first}, "
            f"{a.file.kind.name} inode objref {a.file.inode_objref}"
        )
        b = ctx.lookup_add(dup)
        label = f"dup'd fd {dup}:"
        print(f"  {label:24}objref {b.objref} first={b.first}")
        c = ctx.lookup_add(theirs)
        label = f"child {pid}'s fd {r}:"
        print(
            f"  {label:24}objref {c.objref} first={c.first}"
            f"  (same file: kcmp says {kcmp_file(os.getpid(), r, pid, r)})"
        )
        e = ctx.lookup_add(w)
        print(
            f"  {f'write end, fd {w}:':24}objref {e.objref} first={e.first}, "
            f"{e.file.kind.name} inode objref {e.file.inode_objref}"
        )
        d.check(
            (a.objref, a.first, a.file.inode_objref) == (1, True, 2),
            "first file gets objref 1, its inode objref 2",
        )
        d.check((b.objref, b.first) == (1, False), "dup'd fd: same objref, not new")
        d.check((c.objref, c.first) == (1, False), "forked child's fd: same objref")
        d.check(
            (e.objref, e.first, e.file.inode_objref) == (3, True, 2),
            "other pipe end: a new file, the same inode objref",
        )
    os.close(gate_w)
    os.waitpid(pid, 0)
    for fd in (r, w, dup, theirs, pidfd):
        os.close(fd)


def clear(d: Demo) -> None:
    section("2. release clears the hash (restart side, default policy)")
    with Context() as watch:
        before_mod = watch.stats().mod_objs
        ctx = Context()
        ids = [ctx.test_new() for _ in range(5)]
        for n, t in enumerate(ids, start=1):
            ctx.insert(n, t, ObjType.TEST)
        st = ctx.stats()
        print(f"  5 counted test objects inserted: {stats_line(st)}")
        ctx.release()
        after = ctx.stats()
        print(f"  after release:                   {stats_line(after)}")
        drops = [ctx.test_stat(t).drops for t in ids]
        print(f"  ref_drop calls per object:       {drops}")
        d.check(
            after.nr_objs == 0 and after.nr_free == 5,
            "every entry moved to the free list",
        )
        d.check(drops == [1] * 5, "exactly one reference dropped per object")
        d.check(
            watch.stats().mod_objs - before_mod == 5,
            "entries not kfree'd yet (delayed free)",
        )
        ctx.close()
        left = watch.stats().mod_objs - before_mod
        print(f"  after close: module-wide entries left: {left}")
        d.check(left == 0, "teardown kfree'd them")


def half_closed_pipe(d: Demo) -> None:
    section("3. the half-closed pipe race, each policy")
    print("  restart inserts a pipe's write end into the hash, the writer task")
    print("  closed it long ago; can the reader see EOF once tasks are released?\n")
    expect = {
        Policy.CLEAR_AT_END: ("blocks", "blocks", "EOF"),
        Policy.CLEAR_EARLY: ("blocks", "EOF", "EOF"),
        Policy.FREE_UPFRONT: ("blocks", "EOF", "EOF"),
    }
    print(f"  {'policy':34} {'before release':15} {'after release':15} {'after close'}")
    wrong: list[str] = []
    for policy in (Policy.CLEAR_AT_END, Policy.CLEAR_EARLY, Policy.FREE_UPFRONT):
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        ctx = Context(policy=policy)
        ctx.insert(1, w)
        os.close(w)
        seen = [reader(r)]
        ctx.release()
        seen.append(reader(r))
        ctx.close()
        seen.append(reader(r))
        os.close(r)
        note = "  <- the race" if seen[1] == "blocks" else ""
        print(f"  {POLICY_NAMES[policy]:34} {seen[0]:15} {seen[1]:15} {seen[2]}{note}")
        if tuple(seen) != expect[policy]:
            wrong.append(f"{policy.name}: saw {seen}, expected {list(expect[policy])}")
    print()
    d.check(not wrong, "each policy clears at the moment it names")
    d.failures.extend(wrong)


def live_tree(d: Demo) -> None:
    section("4. checkpoint and restart a live process tree (pyckpt repro halfpipe)")
    # the scenario builds, checkpoints and restarts the tree under each policy
    rep = halfpipe.run()
    for line in rep.render().splitlines()[2:]:
        if line.startswith(("ok ", "NOT")):
            continue
        print(f"  {line}")
    for claim, ok in rep.checks:
        d.check(ok, claim)


def main() -> int:
    print("pyckpt demo: linux-cr's objhash in ckpt.ko, seen from userspace")
    d = Demo()
    try:
        dedup(d)
        clear(d)
        half_closed_pipe(d)
        live_tree(d)
    except DeviceMissingError as e:
        print(f"\n{e}", file=sys.stderr)
        return 2
    if d.failures:
        print(f"\n{len(d.failures)} thing(s) did not behave as expected:")
        for f in d.failures:
            print(f"  - {f}")
        return 1
    print("\nall as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
