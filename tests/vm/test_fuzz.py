"""A hypothesis state machine over the ioctls, with a model of each answer.

Contexts are opened and closed, pipes made and their fds closed underneath,
objects added (checkpoint) or inserted (restart), fetched, dropped late,
queued, run and released, in any order; the model says what every call must
return (a value or the errno of ckpt.h) and what the stats must show.  At
the end of each run the module-wide live counts are back where they were.
The budget is short here (make test); CKPT_FUZZ_EXAMPLES=500 vm/run-tests.sh
-k test_fuzz runs a long one.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)
from vmhelpers import mod_counts

from pyckpt import CkptError, Context, Policy

E = errno
LIVE = ("mod_contexts", "mod_objs", "mod_defers", "mod_test_live")


@dataclass
class End:
    """One fd of a pipe the machine made; file and pipe identities."""

    fd: int
    file: int  # unique per open file
    pipe: int  # unique per pipe (its inode)
    ino: int
    open: bool = True

    @property
    def handle(self) -> int:
        # a closed fd's number may be another file's by now
        return self.fd if self.open else -1


@dataclass
class Model:
    ctx: Context
    policy: Policy
    mode: str | None = None  # "checkpoint" | "restart"
    released: bool = False
    by_file: dict[int, int] = field(default_factory=dict)  # checkpoint
    by_pipe: dict[int, int] = field(default_factory=dict)  # checkpoint inodes
    # objref -> (type, ino)
    objs: dict[int, tuple[str, int]] = field(default_factory=dict)
    dropped: set[int] = field(default_factory=set)
    queue: list[tuple[str, int]] = field(default_factory=list)
    tags: list[int] = field(default_factory=list)
    next_objref: int = 1


def _errno(call) -> int:
    try:
        call()
    except CkptError as e:
        return e.errno
    return 0


class IoctlMachine(RuleBasedStateMachine):
    ctxs = Bundle("ctxs")
    ends = Bundle("ends")

    def __init__(self) -> None:
        super().__init__()
        self.observer = Context()
        self.base = {k: mod_counts(self.observer)[k] for k in LIVE}
        self.models: list[Model] = []
        self.all_ends: list[End] = []
        self.next_id = 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    # ---- contexts and fds ---------------------------------------------------

    @rule(target=ctxs, policy=st.sampled_from(list(Policy)))
    def open_ctx(self, policy: Policy) -> Model:
        m = Model(Context(policy=policy), policy)
        self.models.append(m)
        return m

    @rule(m=consumes(ctxs))
    def close_ctx(self, m: Model) -> None:
        m.ctx.close()

    @rule(target=ends)
    def new_pipe(self):
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        pipe, ino = self._id(), os.fstat(r).st_ino
        a, b = End(r, self._id(), pipe, ino), End(w, self._id(), pipe, ino)
        self.all_ends += [a, b]
        return multiple(a, b)

    @rule(end=ends)
    def close_end(self, end: End) -> None:
        if end.open:
            os.close(end.fd)
            end.open = False

    # ---- objects ------------------------------------------------------------------

    @rule(m=ctxs, end=ends)
    def lookup_add(self, m: Model, end: End) -> None:
        if m.ctx.closed:
            return
        if m.released:
            want = E.EINVAL
        elif not end.open:
            want = E.EBADF
        elif m.mode == "restart":
            want = E.EINVAL
        else:
            want = 0
        try:
            got = m.ctx.lookup_add(end.handle)
        except CkptError as e:
            assert e.errno == want, f"lookup_add: {e}, model {want}"
            return
        assert want == 0, f"lookup_add succeeded, model {want}"
        m.mode = "checkpoint"
        if end.file in m.by_file:
            assert (got.objref, got.first) == (m.by_file[end.file], False)
            return
        assert (got.objref, got.first) == (m.next_objref, True)
        m.by_file[end.file] = got.objref
        m.objs[got.objref] = ("file", end.ino)
        m.next_objref += 1
        if end.pipe not in m.by_pipe:
            m.by_pipe[end.pipe] = m.next_objref
            m.objs[m.next_objref] = ("inode", end.ino)
            m.next_objref += 1
        assert got.file.inode_objref == m.by_pipe[end.pipe]

    @rule(m=ctxs, end=ends, objref=st.integers(-1, 6) | st.just(2**31 - 1))
    def insert(self, m: Model, end: End, objref: int) -> None:
        if m.ctx.closed:
            return
        if m.released or objref <= 0:
            want = E.EINVAL
        elif not end.open:
            want = E.EBADF
        elif m.mode == "checkpoint":
            want = E.EINVAL
        elif objref in m.objs:
            want = E.EEXIST
        else:
            want = 0
        assert _errno(lambda: m.ctx.insert(objref, end.handle)) == want
        if not want:
            m.mode = "restart"
            m.objs[objref] = ("file", end.ino)

    @rule(m=ctxs, objref=st.integers(-1, 8))
    def fetch(self, m: Model, objref: int) -> None:
        if m.ctx.closed:
            return
        if m.released or objref <= 0:
            want = E.EINVAL
        elif objref not in m.objs:
            want = E.ENOENT
        elif m.objs[objref][0] != "file":
            want = E.EINVAL
        elif objref in m.dropped:
            want = E.ENOENT
        else:
            want = 0
        try:
            fd = m.ctx.fetch(objref)
        except CkptError as e:
            assert e.errno == want, f"fetch {objref}: {e}, model {want}"
            return
        assert want == 0, f"fetch {objref} succeeded, model {want}"
        ino = os.fstat(fd).st_ino
        os.close(fd)
        assert ino == m.objs[objref][1], "fetched another pipe"

    # ---- deferqueue ------------------------------------------------------------------

    @rule(m=ctxs, objref=st.integers(0, 6))
    def defer_drop(self, m: Model, objref: int) -> None:
        if m.ctx.closed:
            return
        if m.released or m.mode == "checkpoint" or objref <= 0:
            want = E.EINVAL
        elif objref not in m.objs or objref in m.dropped:
            want = E.ENOENT
        else:
            want = 0
        assert _errno(lambda: m.ctx.defer_drop(objref)) == want
        if not want:
            m.queue.append(("drop", objref))

    @rule(m=ctxs, tag=st.integers(0, 2**64 - 1))
    def defer_log(self, m: Model, tag: int) -> None:
        if not m.ctx.closed:
            m.ctx.defer_log(tag)
            m.queue.append(("log", tag))

    @rule(m=ctxs)
    def defer_run(self, m: Model) -> None:
        if m.ctx.closed:
            return
        want, ran = 0, 0
        while m.queue:
            what, arg = m.queue.pop(0)
            if what == "log":
                m.tags.append(arg)
            elif arg in m.dropped:
                want = E.ENOENT
                break
            else:
                m.dropped.add(arg)
            ran += 1
        try:
            got = m.ctx.defer_run()
        except CkptError as e:
            assert e.errno == want, f"defer_run: {e}, model {want}"
        else:
            assert (want, got) == (0, ran)
        assert m.ctx.tags() == m.tags

    @rule(m=ctxs)
    def release(self, m: Model) -> None:
        if m.ctx.closed:
            return
        want = E.EINVAL if m.released else 0
        assert _errno(m.ctx.release) == want
        if not want:
            m.released = True
            m.queue.clear()  # destroyed unrun (ckpt.h)

    # ---- invariants ------------------------------------------------------------------

    @invariant()
    def stats_match(self) -> None:
        for m in self.models:
            if m.ctx.closed:
                continue
            s = m.ctx.stats()
            assert s.defer_pending == len(m.queue)
            if not m.released or m.policy == Policy.CLEAR_AT_END:
                assert s.nr_objs == len(m.objs)

    def teardown(self) -> None:
        for m in self.models:
            m.ctx.close()
        for end in self.all_ends:
            if end.open:
                os.close(end.fd)
        assert {k: mod_counts(self.observer)[k] for k in LIVE} == self.base
        self.observer.close()


IoctlMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("CKPT_FUZZ_EXAMPLES", "15")),
    stateful_step_count=20,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
TestIoctlStateMachine = IoctlMachine.TestCase
