"""The stubs' fd-table helpers (restarter.py), run in a forked child: what
they leave open is read back from /proc/self/fd."""

from __future__ import annotations

import os
import resource

import pytest
from hosthelpers import in_child

from pyckpt.stub import close_all_except


@pytest.mark.parametrize("pick", [(), (0,), (0, 1, 2), (2, 5, 9), (9,)])
def test_close_all_except_keeps_exactly_keep(pick: tuple[int, ...]) -> None:
    def run() -> int:
        opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(10)]
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        high = os.dup2(opened[0], min(soft - 1, 4000))  # far above the others
        keep = {opened[i] for i in pick} | {0}
        close_all_except(keep)
        left = set()
        for fd in [*range(64), high]:
            try:
                os.fstat(fd)
            except OSError:
                continue
            left.add(fd)
        return 0 if left == keep else 1

    assert in_child(run) == 0
