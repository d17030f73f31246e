"""Helpers shared by the host tests (tests/host is on sys.path while they
run, as tests/vm is for vmhelpers)."""

from __future__ import annotations

import os
from collections.abc import Callable


def in_child(body: Callable[[], int]) -> int:
    """Run body in a forked child; its return value as the exit code (99 if
    it raised)."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = body()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
