"""pyckpt.freeze's choice of freezer and its /proc readers (no VM needed:
the freezing itself is tested in tests/vm/test_freeze.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from pyckpt import freeze, proc


def test_names_are_auto_and_the_classes() -> None:
    assert freeze.NAMES == ("auto", *freeze.FREEZER_CLASSES)
    for name, cls in freeze.FREEZER_CLASSES.items():
        assert freeze.freezer_class(name) is cls


def test_unknown_freezer_is_a_value_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'ptrace' \(one of auto, signal, cgroup\)"):
        freeze.freezer_class("ptrace")


def test_auto_is_signal_without_cgroup_v2(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(freeze, "CGROUP_ROOT", str(tmp_path))
    assert "no cgroup v2 hierarchy" in freeze.cgroup_unusable()
    assert freeze.freezer_class("auto") is freeze.SignalFreezer


def test_auto_is_cgroup_with_a_writable_v2_and_its_freezer(
    tmp_path, monkeypatch
) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "some.slice").mkdir()
    monkeypatch.setattr(freeze, "CGROUP_ROOT", str(tmp_path))
    assert "no freezer" in freeze.cgroup_unusable()  # a kernel before 5.2
    assert freeze.freezer_class("auto") is freeze.SignalFreezer
    (tmp_path / "some.slice" / "cgroup.freeze").write_text("0\n")
    assert freeze.cgroup_unusable() == ""
    assert freeze.freezer_class("auto") is freeze.CgroupFreezer


def _asleep(tid: int) -> None:
    """Wait until our thread tid sleeps, off its CPU."""
    me = os.getpid()
    while True:
        with open(f"/proc/{me}/task/{tid}/stat", "rb") as f:
            st = proc.stat_fields(f.read())[0]
        if st == b"S" and proc.off_cpu(me, tid):
            return
        time.sleep(0.001)


def test_ctxt_switches_move_when_a_thread_runs() -> None:
    """A sleeping thread's count stays; once it woke, ran and slept again,
    it is higher."""
    go, ran, stop = threading.Event(), threading.Event(), threading.Event()
    tids: list[int] = []

    def body() -> None:
        tids.append(threading.get_native_id())
        go.wait()
        ran.set()
        stop.wait()

    t = threading.Thread(target=body)
    t.start()
    try:
        while not tids:
            time.sleep(0.001)
        tid = tids[0]
        _asleep(tid)
        before = proc.ctxt_switches(os.getpid(), tid)
        assert proc.ctxt_switches(os.getpid(), tid) == before
        go.set()
        ran.wait()
        _asleep(tid)
        assert proc.ctxt_switches(os.getpid(), tid) > before
    finally:
        go.set()
        stop.set()
        t.join()


def test_off_cpu_of_a_sleeping_thread() -> None:
    """The main thread of a child blocked in read() is off its CPU."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    try:
        while proc.state(pid) != "S":
            pass
        assert proc.off_cpu(pid, pid)
    finally:
        os.close(w)
        os.waitpid(pid, 0)
