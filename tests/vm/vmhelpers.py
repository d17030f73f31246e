"""Helpers shared by the VM tests (a module name no other test dir uses)."""

from __future__ import annotations

import contextlib
import errno as _errno
import os
from collections.abc import Iterator

import pytest

from pyckpt import CkptError, Context

MOD_FIELDS = (
    "mod_contexts",
    "mod_objs",
    "mod_defers",
    "mod_test_live",
    "mod_test_grabs",
    "mod_test_drops",
    "mod_test_frees",
)


class Fds:
    """The fds a test opens: close them through close() so that teardown never
    closes a number the kernel has since given to something else."""

    def __init__(self) -> None:
        self.open: set[int] = set()

    def add(self, *fds: int) -> None:
        self.open.update(fds)

    def close(self, fd: int) -> None:
        self.open.discard(fd)
        os.close(fd)

    def close_all(self) -> None:
        for fd in sorted(self.open):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.open.clear()


def mod_counts(observer: Context) -> dict[str, int]:
    """The module-wide counters, read through any context."""
    st = observer.stats()
    return {name: getattr(st, name) for name in MOD_FIELDS}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before}


def reader_state(r: int) -> str:
    """'eof', 'empty' (would block: a writer still exists) or 'data'."""
    try:
        data = os.read(r, 4096)
    except BlockingIOError:
        return "empty"
    return "eof" if data == b"" else "data"


def writer_state(w: int) -> str:
    """'epipe' (no reader left) or 'ok' (a reader still exists)."""
    try:
        os.write(w, b"x")
    except BrokenPipeError:
        return "epipe"
    return "ok"


@contextlib.contextmanager
def raises_errno(err: int, ioctl: str | None = None) -> Iterator[pytest.ExceptionInfo]:
    """Expect a CkptError with this errno, and a kernel log entry that says so."""
    with pytest.raises(CkptError) as info:
        yield info
    e = info.value
    name = _errno.errorcode.get(err, str(err))
    assert e.errno == err, f"expected {name}, got {e.errname}: {e}"
    if ioctl is not None:
        assert e.ioctl == ioctl, str(e)
    assert e.entries, f"{e.ioctl} failed with {name} but logged nothing"
    assert e.entries[-1].err == -err, f"log entry {e.entries[-1]} for {name}"
    assert e.entries[-1].func, str(e)


def kmsg() -> list[tuple[int, str]]:
    """The kernel log as (sequence number, message), read from /dev/kmsg."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    out = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192).decode(errors="replace")
            except BlockingIOError:
                return out
            except BrokenPipeError:  # records overwritten: read on
                continue
            head, _, msg = rec.partition(";")
            out.append((int(head.split(",")[1]), msg.strip()))
    finally:
        os.close(fd)


# the module's fault injection (kmod/fault.c): fail the n-th failure point
PARAMS = "/sys/module/ckpt/parameters"


def write_param(name: str, value: int) -> None:
    with open(f"{PARAMS}/{name}", "w") as f:
        f.write(str(value))


def fail_fired() -> int:
    """How many forced failures have fired so far (cumulative)."""
    with open(f"{PARAMS}/fail_fired") as f:
        return int(f.read())
