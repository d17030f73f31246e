"""Fd juggling in a forked child: what restart's stubs and the epoll kind's
helper do before they hold exactly the fds they must (close the rest, make
room under RLIMIT_NOFILE, move fds out of the way of recorded numbers), and
the one-line reports they send back to the coordinator."""

from __future__ import annotations

import faulthandler
import fcntl
import gc
import os
import resource
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from pyckpt import syscalls
from pyckpt.errors import RestartError
from pyckpt.model import Task

MSG_MAX = 3000  # a report line stays below PIPE_BUF: written atomically


FD_END = (1 << 31) - 1  # past any fd number (close_range() takes an int)


def close_all_except(keep: Iterable[int]) -> None:
    """Close every fd but keep's: one close_range() per gap between them,
    not a listing of /proc/self/fd and a close() per fd."""
    lo = 0
    for fd in sorted(set(keep)):
        if fd > lo:
            os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, FD_END)


def make_room(need: int) -> int | None:
    """Raise the soft fd limit to need if it is lower; the old soft limit
    (to restore before exec) or None if unchanged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need <= soft:
        return None
    if hard != resource.RLIM_INFINITY and need > hard:
        raise RestartError(f"needs {need} fds, above RLIMIT_NOFILE {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return soft


def restore_limit(soft: int | None, floor: int) -> None:
    """Back to the old soft limit, or just above the highest restored fd if
    the recorded table did not fit under it (the recorded task's was higher)."""
    if soft is not None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, floor), hard))


def move_above(fds: dict[int, int], floor: int) -> dict[int, int]:
    """Move every fd to a number >= floor (close-on-exec), out of the way of
    the recorded numbers; returns key -> new fd."""
    moved = {}
    for key, fd in fds.items():
        moved[key] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
        os.close(fd)
    return moved


def child_init() -> None:
    # a forked copy of the caller (maybe pytest): no collector finalizing the
    # caller's objects onto fd numbers that now mean something else, no
    # faulthandler writing into a restored fd
    gc.disable()
    faulthandler.disable()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # report EPIPE: just exit


def unique(refs: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(refs))


def say(wfd: int, line: str) -> None:
    line = " ".join(line.split())[:MSG_MAX] + "\n"
    os.write(wfd, line.encode(errors="replace"))


# ---- a helper with a task's rights ------------------------------------------


@dataclass(frozen=True)
class Creds:
    """The ids a helper process takes to act for a task: what the kernel
    checks on a path walk (fsuid, fsgid, groups) and records of a maker
    (a socket's peer credentials: euid, egid; SCM_CREDENTIALS: ruid, rgid)."""

    uids: tuple[int, int, int, int]  # real, effective, saved, fs
    gids: tuple[int, int, int, int]
    groups: tuple[int, ...]
    umask: int = 0o022

    @classmethod
    def exact(cls, t: Task, umask: int) -> Creds:
        """t's ids as recorded: what a stub takes (with its own umask)."""
        uids = (t.ruid, t.euid, t.suid, t.fsuid)
        gids = (t.rgid, t.egid, t.sgid, t.fsgid)
        return cls(uids, gids, tuple(sorted(set(t.groups))), umask & 0o777)

    @classmethod
    def of(cls, t: Task) -> Creds:
        uids = (t.ruid, t.euid, t.suid, t.fsuid)
        gids = (t.rgid, t.egid, t.sgid, t.fsgid)
        if t.euid and 0 in uids:
            # a root real or saved uid would leave the helper capabilities
            # in its permitted set: a non-root task's helper keeps none
            uids = (t.euid, t.euid, t.euid, t.fsuid or t.euid)
        return cls(uids, gids, tuple(sorted(set(t.groups))), t.umask & 0o777)

    @property
    def root(self) -> bool:
        """The task ran as root: its objects are made as root, as always."""
        return self.uids[1] == 0

    @property
    def uid(self) -> int:
        return self.uids[1]

    def take(self) -> None:
        """Become these ids (groups, gids, then uids: after setresuid()
        nothing else may be changed); RestartError unless the kernel has
        exactly them.  A uid other than 0 in real, effective and saved
        leaves no capability (the kernel clears them)."""
        ruid, euid, suid, fsuid = self.uids
        rgid, egid, sgid, fsgid = self.gids
        if tuple(sorted(set(os.getgroups()))) != self.groups:
            os.setgroups(list(self.groups))  # (needs CAP_SETGID even as is)
        os.setresgid(rgid, egid, sgid)
        if fsgid != egid:
            syscalls.setfsgid(fsgid)
        os.setresuid(ruid, euid, suid)
        if fsuid != euid:
            syscalls.setfsuid(fsuid)
        got = (
            (*os.getresuid(), syscalls.setfsuid(0xFFFFFFFF)),
            (*os.getresgid(), syscalls.setfsgid(0xFFFFFFFF)),
            tuple(sorted(set(os.getgroups()))),
        )
        if got != (self.uids, self.gids, self.groups):
            raise RestartError(f"credentials are {got}, not {self}")
        os.umask(self.umask)
