"""An oracle for round trips that does not use the module: what a process
tree's kernel objects look like through /proc, kcmp(2), fstat and poll.

facts(pids) describes a tree (given in tree order) with every identity
replaced by a position, so that an original tree and its restart (other pids,
other inodes) compare equal exactly when they have the same fd numbers, the
same sharing of open file descriptions and pipes, the same flags, offsets,
buffered data, eventfd counts and epoll readiness.  Reading buffered data
consumes it, so facts(..., data=True) is the last look at a tree.  (The
trees themselves are built by tests/vm/trees.py.)
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import stat
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyckpt.device import kcmp_file, pidfd_getfd

O_CLOEXEC = 0o2000000
# f_flags bits that say something about the open file, not how it was opened
FLAG_MASK = os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK


def fdinfo(pid: int, fd: int) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            key, _, value = line.partition(":")
            out.setdefault(key.strip(), value.strip())
    return out


def epoll_lines(pid: int, fd: int) -> list[tuple[int, int, int]]:
    """(tfd, events, data) of each item, from fdinfo."""
    items = []
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("tfd:"):
                w = line.split()
                items.append((int(w[1]), int(w[3], 16), int(w[5], 16)))
    return sorted(items)


def fds_of(pid: int) -> list[int]:
    return sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))


_PTY_SLAVE_MAJORS = range(136, 144)


def _kind(pid: int, fd: int, st: os.stat_result | None = None) -> str:
    link = os.readlink(f"/proc/{pid}/fd/{fd}")
    if st is not None and stat.S_ISCHR(st.st_mode):
        # a pty is one of many (/dev/pts/N): the same kind, not the same N;
        # any other device by path and number
        if os.major(st.st_rdev) in _PTY_SLAVE_MAJORS:
            return "pty"
        return f"chr {link} {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    if link.startswith("pipe:"):
        return "pipe"
    if link.startswith("anon_inode:"):
        return link.removeprefix("anon_inode:")
    return link  # a path: the same path in both trees


def _copy(pid: int, fd: int) -> int:
    pidfd = os.pidfd_open(pid)
    try:
        return pidfd_getfd(pidfd, fd)
    finally:
        os.close(pidfd)


def _pending(fd: int) -> bytes:
    """Bytes buffered in a pipe, read without blocking (poll + FIONREAD)."""
    n = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, n)
    out = b""
    while len(out) < n[0] and select.select([fd], [], [], 0)[0]:
        out += os.read(fd, n[0] - len(out))
    return out


@dataclass(frozen=True)
class FdFacts:
    kind: str
    flags: int
    cloexec: bool
    pos: int
    ofd: int  # open file description: position of its first fd in the tree
    obj: int  # pipe or inode: the same for both ends of a pipe
    extra: tuple = ()  # eventfd count, epoll items, pipe data


def facts(pids: list[int], data: bool = False) -> list[dict[int, FdFacts]]:
    """Per task (in the order given): fd number -> FdFacts."""
    seen_ofd: list[tuple[int, int]] = []
    seen_obj: list[tuple[int, int]] = []
    out: list[dict[int, FdFacts]] = []
    pipes_read: set[int] = set()
    for pid in pids:
        table: dict[int, FdFacts] = {}
        for fd in fds_of(pid):
            info = fdinfo(pid, fd)
            flags = int(info["flags"], 8)
            ofd = next(
                (i for i, (p, f) in enumerate(seen_ofd) if kcmp_file(pid, fd, p, f)),
                None,
            )
            if ofd is None:
                ofd = len(seen_ofd)
                seen_ofd.append((pid, fd))
            st = os.stat(f"/proc/{pid}/fd/{fd}")
            key = (st.st_dev, st.st_ino)
            if key not in seen_obj:
                seen_obj.append(key)
            obj = seen_obj.index(key)
            kind = _kind(pid, fd, st)
            extra: tuple = ()
            if kind == "[eventfd]":
                extra = (int(info["eventfd-count"], 16),)
            elif kind == "[eventpoll]":
                extra = _epoll_facts(pid, fd)
            elif (
                data
                and stat.S_ISFIFO(st.st_mode)
                and flags & os.O_ACCMODE != os.O_WRONLY
                and obj not in pipes_read
            ):
                pipes_read.add(obj)
                c = _copy(pid, fd)
                try:
                    extra = (_pending(c),)
                finally:
                    os.close(c)
            table[fd] = FdFacts(
                kind=kind,
                flags=flags & FLAG_MASK,
                cloexec=bool(flags & O_CLOEXEC),
                pos=int(info["pos"]),
                ofd=ofd,
                obj=obj,
                extra=extra,
            )
        out.append(table)
    return out


def _epoll_facts(pid: int, fd: int) -> tuple:
    """Items as (tfd, events, data), and what is ready right now."""
    c = _copy(pid, fd)
    try:
        ep = select.epoll.fromfd(c)
        try:
            ready = sorted(ep.poll(0))
        finally:
            ep.close()
    except BaseException:
        os.close(c)
        raise
    return (tuple(epoll_lines(pid, fd)), tuple(ready))


@dataclass(frozen=True)
class SessionFacts:
    """A task's session and group as positions in the tree (-1: outside),
    and its controlling terminal: none, or which fd of the task holds it
    (-1: none does) and its foreground group's position."""

    pgrp: int
    sid: int
    ctty_fd: int | None
    foreground: int | None


def sessions(pids: list[int]) -> list[SessionFacts]:
    """Per task (in the order given), from /proc/PID/stat and fstat."""

    def pos(x: int) -> int:
        return pids.index(x) if x in pids else -1

    out = []
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            w = f.read().rpartition(")")[2].split()
        pgrp, sid, tty_nr, tpgid = (int(x) for x in w[2:6])
        ctty_fd = fg = None
        if tty_nr:
            ctty_fd = next(
                (
                    fd
                    for fd in fds_of(pid)
                    if os.stat(f"/proc/{pid}/fd/{fd}").st_rdev == tty_nr
                    and stat.S_ISCHR(os.stat(f"/proc/{pid}/fd/{fd}").st_mode)
                ),
                -1,
            )
            fg = pos(tpgid)
        out.append(SessionFacts(pos(pgrp), pos(sid), ctty_fd, fg))
    return out


def ctty_of(pid: int) -> int:
    """The device number of pid's controlling terminal (0: none)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[4])


def ppids(pids: list[int]) -> list[int]:
    """Each task's parent as a position in pids (-1: outside the tree)."""
    out = []
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rpartition(")")[2].split()[1])
        out.append(pids.index(ppid) if ppid in pids else -1)
    return out


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)
