"""CKPT_TASK_FDS_DETAIL: what the walk tells of each first file besides its
record (readlink, the file's own fdinfo lines, an anonymous pipe's state),
each checked against what /proc and the file itself say.

The fds are opened by the test and inherited by a forked child that closes
its /dev/ckpt fds (the walk refuses them) and waits: the walk reads the
child, /proc reads the child, and the test's own copies answer FIONREAD.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import termios
import time
from collections.abc import Iterator

import pytest
import trees

from pyckpt import Context, proc, syscalls
from pyckpt.abi import lib
from pyckpt.device import PipeState, TaskFd

TEXT_MAX = lib.CKPT_DETAIL_TEXT_MAX


@pytest.fixture
def opened() -> Iterator[dict[str, int]]:
    """One fd of each sort the detail covers, or must not."""
    fds: dict[str, int] = {}
    with contextlib.ExitStack() as stack:

        def keep(name: str, fd: int) -> int:
            fds[name] = fd
            stack.callback(os.close, fd)
            return fd

        keep("eventfd", os.eventfd(5, os.EFD_SEMAPHORE))
        # the big one has more items than fdinfo's 255 bytes hold: /proc's
        for name, n in (("epoll_small", 2), ("epoll_big", 8)):
            ep = stack.enter_context(select.epoll())
            fds[name] = ep.fileno()
            for i in range(n):
                ep.register(keep(f"{name}.{i}", os.eventfd(i)), select.EPOLLIN)
        keep("signalfd", syscalls.signalfd(1 << (signal.SIGUSR1 - 1), os.O_CLOEXEC))
        tfd = keep("timerfd", syscalls.timerfd_create(1, 0))  # CLOCK_MONOTONIC
        syscalls.timerfd_settime(tfd, 0, (100, 0), (0, 500))
        keep("pidfd", os.pidfd_open(os.getpid()))  # its fdinfo needs /proc's
        r, w = os.pipe()
        keep("pipe_r", r)
        keep("pipe_w", w)
        os.write(w, b"y" * 100)
        os.write(w, b"z" * 5000)  # two buffers: FIONREAD sums them
        r2, w2 = os.pipe()
        keep("no_writer", r2)
        os.write(w2, b"w")
        os.close(w2)
        r3, w3 = os.pipe()
        keep("no_reader", w3)
        os.close(r3)
        fcntl.fcntl(w3, fcntl.F_SETPIPE_SZ, 1 << 16)
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        keep("regular", os.open(os.path.join(tmp, "f"), os.O_CREAT | os.O_RDWR))
        deep = os.path.join(tmp, *["d" * 60] * 5)
        os.makedirs(deep)
        keep("long_path", os.open(os.path.join(deep, "f"), os.O_CREAT | os.O_RDWR))
        keep("devnull", os.open(os.devnull, os.O_RDONLY))
        a, b = socket.socketpair()
        stack.callback(b.close)
        keep("socket", a.detach())
        with trees.child_holding() as pid:
            fds["pid"] = pid
            yield fds


def _walk(ctx: Context, pid: int, **kw: object) -> dict[int, TaskFd]:
    return {e.fd: e for e in ctx.task_fds(pid, proc.starttime(pid), **kw)}


def _own_fdinfo(pid: int, fd: int) -> str:
    """/proc's fdinfo less its generic lines: what show_fdinfo() wrote."""
    lines = proc.read_text(f"/proc/{pid}/fdinfo/{fd}").splitlines(keepends=True)
    generic = ("pos:", "flags:", "mnt_id:", "ino:", "lock:")
    return "".join(line for line in lines if not line.startswith(generic))


def test_link_is_readlink(ctx: Context, opened: dict[str, int]) -> None:
    pid = opened["pid"]
    walk = _walk(ctx, pid)
    assert walk
    for fd, e in walk.items():
        want = os.readlink(f"/proc/{pid}/fd/{fd}")
        if not e.first:
            assert e.link is None, e
        elif len(want.encode()) < TEXT_MAX:
            assert e.link == want, (fd, e.link, want)
        else:
            assert e.link is None, (fd, want)
    assert walk[opened["long_path"]].link is None  # 300+ bytes: /proc's then
    assert walk[opened["devnull"]].link == "/dev/null"
    assert walk[opened["eventfd"]].link == "anon_inode:[eventfd]"


def test_fdinfo_is_procs_own_lines(ctx: Context, opened: dict[str, int]) -> None:
    pid = opened["pid"]
    walk = _walk(ctx, pid)
    for name in ("eventfd", "epoll_small", "signalfd", "timerfd"):
        fd = opened[name]
        got = walk[fd].fdinfo
        assert got, name
        if name == "timerfd":  # it_value counts down: compare the rest
            keep = ("clockid:", "settime flags:", "it_interval:")
            got = "".join(x for x in got.splitlines(True) if x.startswith(keep))
            want = _own_fdinfo(pid, fd)
            want = "".join(x for x in want.splitlines(True) if x.startswith(keep))
            assert got.count("\n") == 3, got
        else:
            want = _own_fdinfo(pid, fd)
        assert got == want, name
    assert re.search(
        r"^eventfd-count:\s+5$", walk[opened["eventfd"]].fdinfo, re.MULTILINE
    )
    assert walk[opened["epoll_small"]].fdinfo.count("tfd:") == 2
    assert len(_own_fdinfo(pid, opened["epoll_big"])) >= TEXT_MAX
    # too long, or not a file whose show_fdinfo() runs without /proc's
    for name in ("epoll_big", "pidfd", "pipe_r", "regular", "devnull", "socket"):
        assert walk[opened[name]].fdinfo is None, name


def test_pipe_state(ctx: Context, opened: dict[str, int]) -> None:
    walk = _walk(ctx, opened["pid"])

    def fionread(fd: int) -> int:
        buf = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return int.from_bytes(buf, "little")

    size = fcntl.fcntl(opened["pipe_r"], fcntl.F_GETPIPE_SZ)
    want = PipeState(fionread(opened["pipe_r"]), size, False, False)
    assert want.nbytes == 5100
    assert walk[opened["pipe_r"]].pipe == want
    assert walk[opened["pipe_w"]].pipe == want  # either end: the same pipe
    assert walk[opened["no_writer"]].pipe == PipeState(1, size, False, True)
    assert walk[opened["no_reader"]].pipe == PipeState(0, 1 << 16, True, False)
    for name in ("eventfd", "regular", "socket", "devnull"):
        assert walk[opened[name]].pipe is None, name


def test_without_detail(ctx: Context, opened: dict[str, int]) -> None:
    """The ABI-3 entry: the same walk, none of the detail."""
    pid = opened["pid"]
    plain = ctx.task_fds(pid, proc.starttime(pid), detail=False)
    with Context() as other:
        full = other.task_fds(pid, proc.starttime(pid))
    assert [(e.fd, e.first, e.cloexec, e.file) for e in plain] == [
        (e.fd, e.first, e.cloexec, e.file) for e in full
    ]
    assert all(e.link is None and e.fdinfo is None and e.pipe is None for e in plain)
    assert any(e.link is not None for e in full)


def test_one_context_walks_again_with_its_buffer(opened: dict[str, int]) -> None:
    """The entries buffer a context keeps between walks: a walk of 3 fds
    after one of many, a plain walk and one of another batch size after
    them, on one context; each lists exactly the task's fds, none left
    over from the walk before."""
    big = opened["pid"]
    small = subprocess.Popen(
        ["sleep", "60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # asleep, its loader done with its fds: in (clock_)nanosleep
        for _ in range(500):
            with open(f"/proc/{small.pid}/syscall") as f:
                if f.read().split()[0] in ("35", "230"):
                    break
            time.sleep(0.01)
        fds = {
            p: sorted(int(n) for n in os.listdir(f"/proc/{p}/fd"))
            for p in (big, small.pid)
        }
        assert fds[small.pid] == [0, 1, 2] and len(fds[big]) > 20
        with Context() as ctx:
            for pid, kw in (
                (big, {}),
                (small.pid, {}),
                (small.pid, {"detail": False}),
                (big, {"batch": 7}),
                (small.pid, {}),
            ):
                walk = ctx.task_fds(pid, proc.starttime(pid), **kw)
                assert [e.fd for e in walk] == fds[pid], (pid, kw)
                for e in walk:
                    if e.link is not None:
                        assert e.link == os.readlink(f"/proc/{pid}/fd/{e.fd}")
    finally:
        small.kill()
        small.wait()
