"""Helpers shared by the host tests (tests/host is on sys.path while they
run, as tests/vm is for vmhelpers)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyckpt.model import Task


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


# ---- stand-ins for what a kind is handed (pyckpt/kinds/base.py) ---------------


class LocalRef:
    """An FdRef over one of our own fds: what the walk would say of it."""

    def __init__(
        self, fd: int, objref: int = 1, info: Any = None, pipe: Any = None
    ) -> None:
        self.pid, self.comm, self.fd = os.getpid(), "test", fd
        self.objref, self.info, self.pipe = objref, info, pipe

    @property
    def link(self) -> str:
        return os.readlink(f"/proc/self/fd/{self.fd}")

    @property
    def fdinfo(self) -> str:
        with open(f"/proc/self/fdinfo/{self.fd}") as f:
            return f.read()

    @property
    def local(self) -> int:
        return self.fd

    @property
    def stat(self) -> os.stat_result:
        return os.fstat(self.fd)

    def where(self) -> str:
        return f"task {self.pid} ({self.comm}) fd {self.fd}"


@dataclass
class Collector:
    """A checkpoint collector over our own fds (kinds.base.Collector)."""

    image: Any = None
    first: dict[int, Any] = field(default_factory=dict)
    info: dict[int, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    owned: list[int] = field(default_factory=list)
    files: list[Any] = field(default_factory=list)
    taken: int = 0  # bytes read (take(): the checkpoint's byte budget)

    @property
    def refs(self) -> list[Any]:
        return list(self.first.values())

    @property
    def holders(self) -> dict[int, list[Any]]:
        return {o: [r] for o, r in self.first.items()}

    def problem(self, r: Any, why: str) -> None:
        self.problems.append(f"{r.where()}: {why}")

    def own(self, fd: int) -> int:
        self.owned.append(fd)
        return fd

    def take(self, r: Any, n: int, what: str) -> None:
        self.taken += n

    def stat_path(self, path: str) -> os.stat_result | None:
        try:
            return os.stat(path)
        except OSError:
            return None

    def prefetch(self, refs: Any) -> None:
        list(refs)

    def of_kind(self, *kinds: Any) -> list[Any]:
        return [f for f in self.files if f.kind in kinds]

    def close(self) -> None:
        for fd in self.owned:
            os.close(fd)
        self.owned.clear()


class Objects:
    """Restart's objhash as a dict (kinds.base.Objects): what a kind kept,
    inserted, and which inserts made one whole object (done())."""

    def __init__(self) -> None:
        self.kept: list[int] = []
        self.inserted: dict[int, int] = {}
        self.objects: list[list[int]] = []  # objrefs, one list per done()
        self._pending: list[int] = []
        self.holders: list[Any] = []  # the creds of each as_holder() call

    def keep(self, fd: int) -> int:
        self.kept.append(fd)
        return fd

    def insert(self, objref: int, fd: int) -> None:
        assert objref not in self.inserted, f"objref {objref} inserted twice"
        self.inserted[objref] = fd
        self._pending.append(objref)

    def done(self) -> None:
        self.objects.append(self._pending)
        self._pending = []

    def as_holder(self, creds: Any, fn: Any) -> None:
        """In this process (restarter.py's helpers have host tests of their
        own): which credentials each call named, in order."""
        self.holders.append(creds)
        fn(self)

    def close(self) -> None:
        for fd in self.kept:
            os.close(fd)
        self.kept.clear()


@dataclass
class Options:
    devices: list[str] = field(default_factory=list)
    stdio: str = "inherit"


@dataclass
class Plan:
    """What restart will do (kinds.base.Plan), no tasks made."""

    image: Any
    tasks: list[Any] = field(default_factory=list)
    opts: Options = field(default_factory=Options)
    relocate: bool = False
    nofile: int = 1024
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    replaced: dict[tuple[int, int], int] = field(default_factory=dict)

    def replace_fd(self, pid: int, fd: int, objref: int) -> None:
        self.replaced[(pid, fd)] = objref

    def holder(self, objref: int) -> Any:
        """The first task holding objref, else the first task, else a root
        one (restarter.py's _Plan has the same rule)."""
        for t in self.tasks:
            if any(fd.objref == objref for fd in t.fds):
                return t
        return self.tasks[0] if self.tasks else Task(1, 0, 1, 1, "root", [], "/")

    def where(self, objref: int) -> str:
        for t in self.tasks:
            for fd in t.fds:
                if fd.objref == objref:
                    return f"task {t.pid} fd {fd.fd}"
        return f"objref {objref}"


def fd_flags(fd: int) -> int:
    """F_GETFL of fd."""
    return fcntl.fcntl(fd, fcntl.F_GETFL)
