"""Task shapes real trees have: a zombie child not yet reaped, tasks sharing
one fd table (clone(CLONE_FILES)), multithreaded tasks.  Each round trip is
compared with the oracle (tests/vm/oracle.py: /proc and kcmp, not the
module)."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

import pytest
from oracle import facts, ppids, task_facts, wait_for
from trees import Member, spawn

import pyckpt
from pyckpt.checkpointer import CheckpointError, checkpoint
from pyckpt.image import Image

SLEEP = ["sleep", "1000"]
_libc = ctypes.CDLL(None, use_errno=True)
_SYS_CLONE = 56
_CLONE_FILES = 0x400
_SYS_EXIT = 60


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def _zombie_children(t: Member) -> None:
    """Two children that exit unreaped: one with status 7, one by SIGTERM."""
    a = os.fork()
    if a == 0:
        os._exit(7)
    b = os.fork()
    if b == 0:
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(1)
    live = t.fork(lambda t: None)
    t.report(role="parent", zombies=[a, b], live=live)
    while _state(a) != "Z" or _state(b) != "Z":
        time.sleep(0.01)


def test_zombie_children_round_trip(tmp_path: object) -> None:
    tree = spawn(_zombie_children)
    try:
        pids = tree.pids()
        rep = tree.role("parent")
        assert set(rep["zombies"]) <= set(pids)
        before = task_facts(pids)
        zs = {p: f.zombie for p, f in zip(pids, before) if f.zombie is not None}
        assert sorted(zs.values()) == sorted([7 << 8, signal.SIGTERM])
        res = pyckpt.checkpoint(pids[0])
        # the checkpoint did not reap them, nor thaw them into anything
        assert task_facts(pids) == before
        by_pid = {t.pid: t for t in res.image.tasks}
        for pid, status in zs.items():
            assert by_pid[pid].exit_status == status and by_pid[pid].fds == []
        image = Image.from_bytes(res.image.to_bytes())
        fds_before = facts([p for p in pids if p not in zs])
        with pyckpt.restart(image, argv=SLEEP, release=False) as r:
            new = [r.pids[p] for p in pids]
            assert task_facts(new) == before
            assert ppids(new) == ppids(pids)
            assert facts([r.pids[p] for p in pids if p not in zs]) == fds_before
            r.release()
            # the parent execs sleep, which never reaps: zombies still
            time.sleep(0.5)
            assert task_facts(new) == before
    finally:
        tree.kill()


def test_zombie_root_refused() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    try:
        wait_for(lambda: _state(pid) == "Z")
        with pytest.raises(CheckpointError, match="the tree's root cannot be one"):
            pyckpt.checkpoint(pid)
        assert _state(pid) == "Z"  # not reaped by the checkpoint
    finally:
        os.waitpid(pid, 0)


def test_main_thread_gone_refused() -> None:
    """A process whose main thread exited while another runs on: its leader
    is a zombie in /proc, with no fd table to read: refused, not taken for a
    zombie child."""

    def child(t: Member) -> None:
        threading.Thread(target=signal.pause, daemon=True).start()
        os.close(t._w)  # ready: the main thread leaves, the other stays
        _libc.syscall(_SYS_EXIT, 0)  # exit(2), not exit_group(2)

    def root(t: Member) -> None:
        t.report(role="root", child=t.fork(child))

    tree = spawn(root)
    try:
        pid = tree.role("root")["child"]
        wait_for(lambda: _state(pid) == "Z")
        assert len(os.listdir(f"/proc/{pid}/task")) == 2
        with pytest.raises(CheckpointError, match="main thread exited while other"):
            pyckpt.checkpoint(tree.root)
        assert _state(tree.root) in ("S", "R")
    finally:
        tree.kill()


def _clone_files(t: Member) -> None:
    """A child made by clone(CLONE_FILES | SIGCHLD): one fd table for both."""
    _r, w = os.pipe()
    os.write(w, b"queued")
    os.eventfd(3)
    child = _libc.syscall(_SYS_CLONE, _CLONE_FILES | signal.SIGCHLD, 0, 0, 0, 0)
    if child == 0:
        while True:
            signal.pause()
    assert child > 0, ctypes.get_errno()
    os.open("/", os.O_RDONLY)  # opened after the clone: in both tables
    t.report(role="root", child=child)


def test_clone_files_tables() -> None:
    tree = spawn(_clone_files)
    try:
        pids = tree.pids()
        assert len(pids) == 2
        before = task_facts(pids)
        assert [f.table for f in before] == [0, 0]  # shared
        fds_before = facts(pids)
        assert set(fds_before[0]) == set(fds_before[1])
        res = pyckpt.checkpoint(pids[0])
        child = res.image.tasks[1]
        assert child.files_pid == pids[0] and res.image.tasks[0].files_pid == 0
        image = Image.from_bytes(res.image.to_bytes())
        assert image.tasks[1].files_pid == pids[0]
        with pytest.warns(RuntimeWarning, match="execve.2. unshares a shared"):
            r = pyckpt.restart(image, argv=SLEEP, release=False)
        with r:
            new = [r.pids[p] for p in pids]
            # the same fds on the same open files; two tables (documented)
            assert facts(new) == fds_before
            assert [f.table for f in task_facts(new)] == [0, 1]
            assert facts(new, data=True) == facts(pids, data=True)
    finally:
        tree.kill()


def _spin(stop: list[bool]) -> None:
    n = 0
    while not stop:
        n += 1


def _threads(t: Member) -> None:
    _r, w = os.pipe()
    os.write(w, b"abc")
    stop: list[bool] = []
    for _ in range(2):
        threading.Thread(target=time.sleep, args=(10**6,), daemon=True).start()
    threading.Thread(target=_spin, args=(stop,), daemon=True).start()
    t.report(role="root", tids=sorted(int(x) for x in os.listdir("/proc/self/task")))


def _cpu(pid: int, tid: int) -> int:
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        rest = f.read().rpartition(")")[2].split()
    return int(rest[11]) + int(rest[12])  # utime + stime


@pytest.mark.parametrize("freezer", ["signal", "cgroup"])
def test_multithreaded_every_thread_stopped(freezer: str) -> None:
    tree = spawn(_threads)
    try:
        pids = tree.pids()
        (pid,) = pids
        tids = tree.role("root")["tids"]
        assert len(tids) == 4
        before = facts(pids)
        # the spinning thread does run while the tree is not frozen
        cpu = {tid: _cpu(pid, tid) for tid in tids}
        wait_for(lambda: any(_cpu(pid, t) > c + 5 for t, c in cpu.items()))
        seen: dict[str, object] = {}

        def save(image: Image) -> None:
            # called while the tree is frozen (kill=True): no thread runs
            cpu = {tid: _cpu(pid, tid) for tid in tids}
            seen["states"] = {tid: _state_of(pid, tid) for tid in tids}
            time.sleep(0.5)
            later = {tid: _cpu(pid, tid) for tid in tids}
            seen["ran"] = {t: later[t] - c for t, c in cpu.items() if later[t] != c}

        res = checkpoint(pid, freezer=freezer, kill=True, save=save)
        assert seen["ran"] == {}
        if freezer == "signal":
            assert set(seen["states"].values()) == {"T"}
        assert res.image.tasks[0].nr_threads == 4
        image = Image.from_bytes(res.image.to_bytes())
        with pytest.warns(RuntimeWarning, match="had 4 threads"):
            r = pyckpt.restart(image, argv=SLEEP, release=False)
        with r:
            new = [r.pids[pid]]
            assert facts(new) == before
            data = [f.extra for f in facts(new, data=True)[0].values() if f.extra]
            assert data == [(b"abc",)]
            assert [f.threads for f in task_facts(new)] == [1]
    finally:
        tree.kill()


def _state_of(pid: int, tid: int) -> str:
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]
