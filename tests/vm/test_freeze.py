"""The freeze holds (issue 19, "Run while frozen"): no one outside the tree
makes it run during collection unnoticed, and every path leaves the tree
as it was found, in its own cgroups, with no cgroup of ours left.

The tree belongs to uid 65534 (nobody); what "the user" does is done by a
forked child that took uid 65534 (setresuid), at a fixed point: the test
wraps checkpointer._collect, which runs once the tree is frozen and its
tasks counted, and acts before the collection starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from trees import Member, in_child

import pyckpt.checkpointer as cp
import pyckpt.freeze as fz
from pyckpt import api
from pyckpt.errors import CheckpointError

NOBODY = 65534
WAIT = 20.0  # seconds: TCG guests are slow
STOPPED = ("T", "t")

Spawn = Callable[..., object]


def state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return ""


def cgroup(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def our_cgroups() -> list[str]:
    return [n for n in os.listdir(fz.CGROUP_ROOT) if n.startswith("pyckpt-")]


def tracer(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    raise AssertionError("no TracerPid line")


def wait_for(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.01)


def as_user(fn: Callable[[], None]) -> None:
    """fn() in a child holding uid/gid 65534 and nothing else."""

    def body() -> int:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        fn()
        return 0

    assert in_child(body) == 0


def user_signal(pids: list[int], sig: int) -> None:
    as_user(lambda: [os.kill(pid, sig) for pid in pids])


def user_tree(spawn: Spawn, stopped_child: bool = False) -> object:
    """A root and a child (and a grandchild) that took uid 65534, waiting in
    pause(); with stopped_child the child is stopped (SIGSTOP) by itself."""

    def grandchild(m: Member) -> None:
        m.report(role="grandchild")

    def child(m: Member) -> None:
        m.fork(grandchild)
        m.report(role="child")

    def root(m: Member) -> None:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        m.fork(child)
        m.report(role="root")

    tree = spawn(root)
    if stopped_child:
        pid = tree.role("child")["pid"]
        user_signal([pid], signal.SIGSTOP)
        wait_for(lambda: state(pid) == "T", "the child to stop")
    return tree


@contextlib.contextmanager
def before_collection(act: Callable[[fz.Freezer], None]) -> Iterator[None]:
    """act(freezer) once the tree is frozen, before it is collected."""
    real = cp._collect

    def collect(frz: fz.Freezer, col: object) -> None:
        act(frz)
        real(frz, col)

    cp._collect = collect
    try:
        yield
    finally:
        cp._collect = real


def assert_as_found(tree: object, groups: dict[int, str], stopped: set[int]) -> None:
    """Every task runs again (or is stopped, if it was found so), in its own
    cgroup, traced by no one; no cgroup of ours is left."""
    for pid, where in groups.items():
        want = STOPPED if pid in stopped else ("S", "R")
        wait_for(lambda pid=pid, want=want: state(pid) in want, f"task {pid} {want}")
        assert cgroup(pid) == where
        assert tracer(pid) == 0
    assert our_cgroups() == []


# ---- attack 1: SIGCONT from the owner while the tree is collected ----------------


def test_sigcont_from_the_user_is_refused(spawn: Spawn, tmp_path: Path) -> None:
    """Signal freezer: the tree's owner continues a task between the freeze
    and the collection (it runs, and stays running). The checkpoint is
    refused and nothing is written; the tree runs, as found."""
    tree = user_tree(spawn)
    pids = tree.pids()
    groups = {pid: cgroup(pid) for pid in pids}
    child = tree.role("child")["pid"]

    def sigcont(frz: fz.Freezer) -> None:
        assert state(child) in STOPPED
        user_signal([child], signal.SIGCONT)
        wait_for(lambda: state(child) not in STOPPED, "the child to run")

    out = tmp_path / "tree.img"
    with (
        before_collection(sigcont),
        pytest.raises(CheckpointError, match=rf"task {child} ran during collection"),
    ):
        api.checkpoint(tree.root, out, freezer="signal")
    assert not out.exists()
    assert_as_found(tree, groups, set())


def test_sigcont_then_sigstop_from_the_user_is_refused(spawn: Spawn) -> None:
    """Signal freezer: the owner continues a task and stops it again before
    the collection ends (it is stopped again when looked at): the task's
    context switches say it ran; the checkpoint is refused."""
    tree = user_tree(spawn)
    pids = tree.pids()
    groups = {pid: cgroup(pid) for pid in pids}
    child = tree.role("grandchild")["pid"]

    def run_and_stop(frz: fz.Freezer) -> None:
        user_signal([child], signal.SIGCONT)
        wait_for(lambda: state(child) not in STOPPED, "the task to run")
        user_signal([child], signal.SIGSTOP)
        wait_for(lambda: state(child) in STOPPED, "the task to stop again")

    with (
        before_collection(run_and_stop),
        pytest.raises(CheckpointError, match=rf"task {child} ran during collection"),
    ):
        cp.checkpoint(tree.root, freezer="signal")
    # found running, stopped by us: ours to continue
    assert_as_found(tree, groups, set())


def test_user_sigcont_under_the_cgroup_freezer_changes_nothing(
    spawn: Spawn,
) -> None:
    """The cgroup freezer holds against SIGCONT: the checkpoint succeeds,
    no task ran (each task still frozen after the signal), the tree runs
    again afterwards in its own cgroups."""
    tree = user_tree(spawn)
    pids = tree.pids()
    groups = {pid: cgroup(pid) for pid in pids}
    seen = []

    def sigcont(frz: fz.Freezer) -> None:
        user_signal(pids, signal.SIGCONT)
        seen.extend("pyckpt-" in cgroup(pid) for pid in pids)

    with before_collection(sigcont):
        res = cp.checkpoint(tree.root, freezer="cgroup")
    assert seen == [True] * len(pids)
    assert sorted(t.pid for t in res.image.tasks) == sorted(pids)
    assert_as_found(tree, groups, set())


def test_default_freezer_is_the_cgroup_one_where_usable(spawn: Spawn) -> None:
    """With cgroup v2 mounted (the guest), the default freezer is the
    cgroup one: the owner's SIGCONT does not refuse the checkpoint."""
    assert os.path.exists(os.path.join(fz.CGROUP_ROOT, "cgroup.controllers"))
    tree = user_tree(spawn)
    pids = tree.pids()
    groups = {pid: cgroup(pid) for pid in pids}
    where = []

    def sigcont(frz: fz.Freezer) -> None:
        where.extend(cgroup(pid) for pid in pids)
        user_signal(pids, signal.SIGCONT)

    with before_collection(sigcont):
        res = api.checkpoint(tree.root)
    assert all("pyckpt-" in w for w in where)
    assert res.nr_tasks == len(pids)
    assert_as_found(tree, groups, set())


@pytest.mark.parametrize("freezer", ["auto", "signal", "cgroup"])
def test_user_tree_untouched_is_checkpointed(spawn: Spawn, freezer: str) -> None:
    """Without anyone's signal, the check that no task ran passes with
    every freezer (a task stopped by its owner included), repeatedly."""
    tree = user_tree(spawn, stopped_child=True)
    pids = tree.pids()
    groups = {pid: cgroup(pid) for pid in pids}
    for _ in range(3):
        res = cp.checkpoint(tree.root, freezer=freezer)
        assert res.nr_tasks == len(pids)
        assert_as_found(tree, groups, {tree.role("child")["pid"]})


def test_unknown_freezer_names_the_choices(spawn: Spawn) -> None:
    tree = user_tree(spawn)
    with pytest.raises(ValueError, match="auto, signal, cgroup"):
        cp.checkpoint(tree.root, freezer="ptrace")


# ---- attack 2: the cgroup freezer's thaw --------------------------------------


FORKS = 3


def test_cgroup_thaw_moves_home_while_frozen(spawn: Spawn) -> None:
    """A task that forks whenever it runs (here: at each SIGUSR1, sent as
    soon as the frozen cgroup is thawed, before the checkpoint returns):
    every child it forked around the thaw is in the task's own cgroup, and
    our cgroup is gone. Thawing before moving home left them in ours."""
    r, w = os.pipe()

    def forker(m: Member) -> None:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)

        def on_usr1(sig: int, frame: object) -> None:
            for _ in range(FORKS):
                pid = os.fork()
                if pid == 0:
                    while True:
                        signal.pause()
                os.write(w, f"{pid}\n".encode())

        signal.signal(signal.SIGUSR1, on_usr1)
        m.report(role="forker")

    tree = spawn(forker, pass_fds=(w,))
    os.close(w)
    pid = tree.root
    origin = cgroup(pid)
    real = fz.CgroupFreezer._write
    children: list[int] = []

    def write(self: fz.CgroupFreezer, name: str, value: str, cg: str | None = None):
        real(self, name, value, cg)
        if name == "cgroup.freeze" and value == "0" and not children:
            os.kill(pid, signal.SIGUSR1)  # runs as soon as it can
            buf = b""
            while buf.count(b"\n") < FORKS:
                chunk = os.read(r, 4096)
                assert chunk, "the forker died"
                buf += chunk
            children.extend(int(x) for x in buf.split())

    fz.CgroupFreezer._write = write
    try:
        res = cp.checkpoint(pid, freezer="cgroup", allow_external=True)
    finally:
        fz.CgroupFreezer._write = real
        os.close(r)
        tree.reports.extend({"pid": c} for c in children)  # killed with the tree
    assert [t.pid for t in res.image.tasks] == [pid]
    assert len(children) == FORKS
    for c in children:
        assert cgroup(c) == origin, f"child {c}"
    assert cgroup(pid) == origin
    assert our_cgroups() == []


def test_cgroup_undo_moves_home_before_thawing(spawn: Spawn) -> None:
    """The order of the undo itself: each task is moved home while our
    cgroup is still frozen, the thaw comes after."""
    tree = user_tree(spawn)
    pids = tree.pids()
    groups = {pid: cgroup(pid) for pid in pids}
    real = fz.CgroupFreezer._write
    log: list[tuple[str, str]] = []

    def write(self: fz.CgroupFreezer, name: str, value: str, cg: str | None = None):
        log.append((name, value if cg is None or name != "cgroup.procs" else "home"))
        real(self, name, value, cg)

    fz.CgroupFreezer._write = write
    try:
        cp.checkpoint(tree.root, freezer="cgroup")
    finally:
        fz.CgroupFreezer._write = real
    thaw = log.index(("cgroup.freeze", "0"))
    homes = [i for i, e in enumerate(log) if e == ("cgroup.procs", "home")]
    assert len(homes) == len(pids)
    assert max(homes) < thaw
    assert_as_found(tree, groups, set())


# ---- attack 3: every failure leaves the tree as found -------------------------


@pytest.mark.parametrize("freezer", ["signal", "cgroup"])
def test_failure_during_collection_leaves_the_tree_as_found(
    spawn: Spawn, freezer: str
) -> None:
    """A failure after the freeze: the tree runs again (the task its owner
    had stopped stays stopped), in its own cgroups, untraced, nothing of
    ours left."""
    tree = user_tree(spawn, stopped_child=True)
    pids = tree.pids()
    groups = {pid: cgroup(pid) for pid in pids}

    def fail(frz: fz.Freezer) -> None:
        raise CheckpointError("injected failure")

    with (
        before_collection(fail),
        pytest.raises(CheckpointError, match="injected failure"),
    ):
        cp.checkpoint(tree.root, freezer=freezer)
    assert_as_found(tree, groups, {tree.role("child")["pid"]})


def test_cgroup_move_failure_leaves_the_tree_as_found(spawn: Spawn) -> None:
    """The cgroup freezer fails to move the second task in: the first is
    moved home and runs, our cgroup is removed."""
    tree = user_tree(spawn)
    pids = tree.pids()
    groups = {pid: cgroup(pid) for pid in pids}
    real = fz.CgroupFreezer._write
    moved: list[str] = []

    def write(self: fz.CgroupFreezer, name: str, value: str, cg: str | None = None):
        if name == "cgroup.procs" and cg is None:
            moved.append(value)
            if len(moved) == 2:
                raise PermissionError(13, "injected")
        real(self, name, value, cg)

    fz.CgroupFreezer._write = write
    try:
        with pytest.raises(CheckpointError, match="injected"):
            cp.checkpoint(tree.root, freezer="cgroup")
    finally:
        fz.CgroupFreezer._write = real
    assert_as_found(tree, groups, set())


def test_refusal_for_a_task_that_ran_kills_nothing(spawn: Spawn) -> None:
    """With kill=True, a refusal thaws the tree instead of killing it, and
    the image is not written."""
    tree = user_tree(spawn)
    pids = tree.pids()
    groups = {pid: cgroup(pid) for pid in pids}
    child = tree.role("child")["pid"]

    def sigcont(frz: fz.Freezer) -> None:
        user_signal([child], signal.SIGCONT)
        wait_for(lambda: state(child) not in STOPPED, "the child to run")

    saved = []
    with (
        before_collection(sigcont),
        pytest.raises(CheckpointError, match="ran during collection"),
    ):
        cp.checkpoint(tree.root, freezer="signal", kill=True, save=saved.append)
    assert saved == []
    assert all(psutil.pid_exists(pid) for pid in pids)
    assert_as_found(tree, groups, set())
