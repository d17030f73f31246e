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


def _kind(pid: int, fd: int) -> str:
    link = os.readlink(f"/proc/{pid}/fd/{fd}")
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
            kind = _kind(pid, fd)
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


@dataclass(frozen=True)
class TaskFacts:
    zombie: int | None  # wait(2) status of an unreaped exited task
    threads: int
    table: int  # fd table: position of the first task of the tree sharing it


def task_facts(pids: list[int]) -> list[TaskFacts]:
    """Per task (in the order given): zombie status, threads and fd-table
    sharing (kcmp(KCMP_FILES), the syscall, not the module)."""
    from pyckpt.device import kcmp_files

    out = []
    for i, pid in enumerate(pids):
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rpartition(")")[2].split()
        zombie = int(rest[49]) & 0xFFFF if rest[0] == "Z" else None
        threads = len(os.listdir(f"/proc/{pid}/task"))
        table = i
        if zombie is None:
            table = next(
                j
                for j in range(i + 1)
                if (j == i or out[j].zombie is None)
                and kcmp_files(pid, pids[j]) == 0
            )
        out.append(TaskFacts(zombie, threads, table))
    return out
