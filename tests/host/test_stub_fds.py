"""The stubs' fd-table helpers (restarter.py), run in a forked child: what
they leave open is read back from /proc/self/fd."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable

import pytest

from pyckpt.restarter import _close_all_except


def _in_child(fn: Callable[[], bool]) -> bool:
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ok = fn()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("pick", [(), (0,), (0, 1, 2), (2, 5, 9), (9,)])
def test_close_all_except_keeps_exactly_keep(pick: tuple[int, ...]) -> None:
    def run() -> bool:
        opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(10)]
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        high = os.dup2(opened[0], min(soft - 1, 4000))  # far above the others
        keep = {opened[i] for i in pick} | {0}
        _close_all_except(keep)
        left = set()
        for fd in [*range(64), high]:
            try:
                os.fstat(fd)
            except OSError:
                continue
            left.add(fd)
        return left == keep

    assert _in_child(run)
