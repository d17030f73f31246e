"""pytest plugin (guest only): name each test in the kernel log.

vm/guest-tests.sh loads it (``-p kmsg_marks``). Before each test it writes
``ckpt-test: start NODEID`` to /dev/kmsg, and ``ckpt-test: phase after-tests``
at the end, so that vm/klog.py can name the test during which the kernel
made a report (KASAN, lockdep, WARNING, ...). The kernel must not rate-limit
these writes: vm/run.sh boots with printk.devkmsg=on.
"""

from __future__ import annotations

import os

import pytest

KMSG = "/dev/kmsg"


def mark(text: str) -> None:
    """One line into the kernel log, at KERN_WARNING (<4>) so that the
    console (loglevel=5) has it too: a guest that dies leaves only that."""
    line = f"<4>ckpt-test: {text}".replace("\n", " ")[:900] + "\n"
    # opened for each line, never kept: a test's forked children would
    # inherit the fd, and a checkpoint of them would meet /dev/kmsg
    try:
        fd = os.open(KMSG, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError:
        return  # not in the guest, or not root: nothing to mark
    try:
        os.write(fd, line.encode(errors="replace"))
    except OSError:
        pass  # a lost marker costs attribution, never a test
    finally:
        os.close(fd)


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    mark(f"start {nodeid}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    mark("phase after-tests")
