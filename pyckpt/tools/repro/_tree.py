"""A small process tree for the scenarios: a root and its children, each
holding exactly the fds it is given at the numbers it is given (the guest's
own fds 0-2 are consoles that no checkpoint can save)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Callable

import psutil

# shared() -> named fds made before the fork; a task's setup(shared) -> {fd: source}
Shared = dict[str, int]
Setup = Callable[[Shared], dict[int, int]]
_GATE_FD = 900  # above every fd a scenario places


def _place(targets: dict[int, int], gate: int) -> None:
    """Keep only gate and each source at its target number (inheritable)."""
    tmp = {
        dst: fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, _GATE_FD + 1)
        for dst, src in targets.items()
    }
    keep = {gate, *tmp.values()}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    for dst, t in tmp.items():
        os.dup2(t, dst)
        os.close(t)


def _become(setup: Setup, shared: Shared, gate: int) -> None:
    _place(setup(shared), gate)
    os.close(gate)  # this task is ready
    while True:
        signal.pause()


def build(shared: Callable[[], Shared], children: list[Setup], root: Setup) -> int:
    """Fork root -> children; return the root's pid once every task holds its fds."""
    gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid:
        os.close(gate_w)
        try:
            while os.read(gate_r, 1):  # EOF: every task closed its copy
                pass
        finally:
            os.close(gate_r)
        return pid
    try:
        os.close(gate_r)
        gate = fcntl.fcntl(gate_w, fcntl.F_DUPFD_CLOEXEC, _GATE_FD)
        os.close(gate_w)
        objs = shared()
        for setup in children:
            if os.fork() == 0:
                _become(setup, objs, gate)
        _become(root, objs, gate)
    finally:
        os._exit(1)  # only reached on a failed setup: the scenario sees it


def kill(root: int) -> None:
    """SIGKILL a tree that is still there (after a failed checkpoint)."""
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    with contextlib.suppress(ChildProcessError):
        os.waitpid(root, 0)


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True
