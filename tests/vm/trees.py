"""Process trees for the checkpoint tests.

``spawn(body)`` forks a member that closes every fd it did not create (the
guest's fds 0-2 are virtio-serial ports that no checkpoint can save), runs
``body(member)`` and then waits in ``pause()`` until killed.  A member may
fork more members (``member.fork(body)``: the child inherits its fds) and
report facts to the test as JSON (``member.report(role=..., fd=...)``).

Readiness: every member holds the write end of one pipe and closes it once
its body returned; the test reads that pipe until EOF, so when ``spawn``
returns every member is set up and the pipe is gone from the tree.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

from pyckpt.abi import DEVICE

READY_TIMEOUT = 30.0  # TCG guests are slow
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NAME = 15

_libc = ctypes.CDLL(None, use_errno=True)


def set_comm(name: str) -> None:
    """prctl(PR_SET_NAME): the task's comm."""
    _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def set_subreaper(on: bool) -> None:
    # orphaned members come back to the test process, which reaps them
    _libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)


class Member:
    """What a member's body may do."""

    def __init__(self, ready_w: int) -> None:
        self._w = ready_w
        self.kept: list[Any] = []  # objects owning fds (epoll, sockets): kept alive

    def keep(self, obj: Any) -> Any:
        self.kept.append(obj)
        return obj

    def report(self, **facts: Any) -> None:
        line = json.dumps({"pid": os.getpid(), **facts}) + "\n"
        os.write(self._w, line.encode())

    def fork(self, body: Callable[[Member], None]) -> int:
        pid = os.fork()
        if pid == 0:
            _run(body, self._w, keep=None)
        return pid


def _run(body: Callable[[Member], None], w: int, keep: Iterable[int] | None) -> None:
    code = 0
    try:
        if keep is not None:
            keep_fds = sorted({w, *keep})
            low = 0
            for fd in keep_fds:
                if low < fd:  # closerange(0, 0) closes every fd (3.11's
                    os.closerange(low, fd)  # close_range(0, -1))
                low = fd + 1
            os.closerange(low, 1 << 16)
        m = Member(w)
        body(m)
        os.close(w)
        while True:
            signal.pause()
    except BaseException:  # noqa: BLE001 - a member never returns into pytest
        code = 1
        with contextlib.suppress(OSError):
            os.write(w, (json.dumps({"error": traceback.format_exc()}) + "\n").encode())
    finally:
        os._exit(code)


@dataclass
class Tree:
    root: int
    reports: list[dict[str, Any]] = field(default_factory=list)
    reaped: set[int] = field(default_factory=set)

    def role(self, name: str) -> dict[str, Any]:
        (r,) = [r for r in self.reports if r.get("role") == name]
        return r

    def pids(self) -> list[int]:
        """Every live task of the tree (root first)."""
        try:
            root = psutil.Process(self.root)
            return [self.root] + [p.pid for p in root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        pids = set(self.pids()) | {r["pid"] for r in self.reports if "pid" in r}
        pids.add(self.root)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        pending = pids - self.reaped
        while pending and time.monotonic() < deadline:
            for pid in list(pending):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    # not (yet) reparented to us, or already gone
                    done = pid if not psutil.pid_exists(pid) else 0
                if done:
                    pending.discard(pid)
                    self.reaped.add(pid)
            if pending:
                time.sleep(0.01)


def spawn(body: Callable[[Member], None], pass_fds: Iterable[int] = ()) -> Tree:
    """Fork a tree whose root runs body; pass_fds stay open in the root."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        _run(body, w, keep=pass_fds)
    os.close(w)
    tree = Tree(pid)
    buf = b""
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                raise TimeoutError(f"tree {pid} not ready in {READY_TIMEOUT} s")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buf += chunk
    except BaseException:
        tree.kill()
        raise
    finally:
        os.close(r)
    tree.reports = [json.loads(line) for line in buf.decode().splitlines()]
    errors = [x["error"] for x in tree.reports if "error" in x]
    if errors:
        tree.kill()
        raise RuntimeError("a tree member failed:\n" + "\n".join(errors))
    return tree


@contextlib.contextmanager
def tree_of(body: Callable[[Member], None]) -> Iterator[list[int]]:
    """The pids of a tree built by body (root first); killed afterwards."""
    tree = spawn(body)
    try:
        yield tree.pids()
    finally:
        tree.kill()


@contextlib.contextmanager
def child_holding() -> Iterator[int]:
    """A forked child holding every fd the caller has open but its /dev/ckpt
    ones (a walk refuses those), waiting until the block ends; its pid."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for name in os.listdir("/proc/self/fd"):
                with contextlib.suppress(OSError):
                    if os.path.realpath(f"/proc/self/fd/{name}") == DEVICE:
                        os.close(int(name))
            os.close(ready_r)
            os.close(go_w)
            os.write(ready_w, b"x")
            os.read(go_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    try:
        assert os.read(ready_r, 1) == b"x"
        yield pid
    finally:
        os.close(go_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def in_child(fn: Callable[[], int]) -> int:
    """Run fn() in a forked child (to drop capabilities or ids there); its
    return value is the child's exit status (99 if it raised)."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = fn()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
