"""The checkpoint image as plain data: a tree of tasks, their fd tables and
the open files they share, with no codec (``image.py`` reads and writes it,
``records.py`` packs its records).

A kind's own state lives in its own objects: per file in ``File.extra``,
per image in ``Image.extra[kind name]`` (the pipe kind's buffers, the epoll
kind's item lists); the model names no kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyckpt.abi import FileKind, FMode, lib

RLIM_INFINITY = (1 << 64) - 1  # as the image stores it (~0ULL)


RLIM_NLIMITS = int(lib.CKPT_RLIM_NLIMITS)


@dataclass
class Head:
    """HEAD: who wrote the image, when, on which kernel."""

    time: float  # seconds since the epoch, when the tree was frozen
    sysname: str
    release: str
    version: str
    machine: str
    format_version: int = 0  # 0: the writer fills CKPT_FORMAT_VERSION
    abi_version: int = 0  # 0: the writer fills CKPT_ABI_VERSION


@dataclass(slots=True)
class Fd:
    """FD: one descriptor of a task's table."""

    fd: int
    objref: int  # the File it refers to
    cloexec: bool = False


@dataclass
class Task:
    """TASK: one process of the tree, with its fd table."""

    pid: int
    ppid: int
    sid: int
    pgid: int
    comm: str
    argv: list[str]
    cwd: str
    fds: list[Fd] = field(default_factory=list)
    # credentials (format 2): restart gives the task exactly these
    ruid: int = 0
    euid: int = 0
    suid: int = 0
    fsuid: int = 0
    rgid: int = 0
    egid: int = 0
    sgid: int = 0
    fsgid: int = 0
    groups: list[int] = field(default_factory=list)
    umask: int = 0o022
    no_new_privs: bool = False
    # (soft, hard) by RLIMIT_* number, RLIM_INFINITY for none; None: not
    # recorded (restart leaves the limits it inherits)
    rlimits: list[tuple[int, int]] | None = None
    env: list[str] = field(default_factory=list)
    exe: str = ""  # "": exec argv[0] from PATH
    root: str = "/"
    # format 3: the shapes of real trees
    exit_status: int | None = None  # a zombie's wait(2) status; None: alive
    files_pid: int = 0  # the first task whose fd table it shares; 0: its own
    nr_threads: int = 1  # when checkpointed (restart makes one)
    # format 4: what survives an exec and limits the task; restart restores
    # the bounding, inheritable and ambient sets, securebits and seccomp
    # filters (None: not recorded, restart leaves what the stub inherits)
    cap_inheritable: int = 0
    cap_permitted: int = 0  # as checkpointed: the exec computes it again
    cap_effective: int = 0
    cap_bset: int | None = None
    cap_ambient: int = 0
    securebits: int | None = None
    seccomp: list[bytes] = field(default_factory=list)  # sock_filter arrays
    at_secure: bool = False  # its exec was privileged (setuid, file caps)
    label: str = ""  # LSM label (attr/current); "": none recorded
    # what stat(2) said of the cwd (restart checks it); cwd_mode 0: unknown
    cwd_dev: int = 0
    cwd_ino: int = 0
    cwd_mode: int = 0
    cwd_uid: int = 0
    cwd_gid: int = 0


@dataclass
class File:
    """FILE: one open file description, saved once whatever shares it."""

    objref: int
    kind: FileKind
    f_flags: int
    f_mode: FMode
    pos: int = 0
    path: str = ""  # REG, DIR, FIFO
    pipe_objref: int = 0  # PIPE, FIFO
    external: bool = False  # also referenced from outside the tree
    # REG, DIR, FIFO: what fstat() said at checkpoint (restart verifies them)
    st_dev: int = 0
    st_ino: int = 0
    st_mode: int = 0
    st_uid: int = 0
    st_gid: int = 0
    st_size: int = 0
    st_rdev: int = 0  # CHR, TTY: the device number
    # a kind's own state (pyckpt/kinds/), written as its own records
    extra: Any = None


@dataclass
class ErrorRecord:
    """ERROR: a ckpt_write_err() entry: a problem or note about an object."""

    err: int  # negative errno, 0 for a note
    msg: str
    objref: int = 0
    pid: int = 0
    fd: int = -1


@dataclass(eq=False)
class Image:
    """A whole checkpoint: tasks in tree order (a parent before its children).

    ``files`` is keyed by objref; ``extra`` holds each kind's image-wide
    state under the kind's name (``kinds.pipe.pipes(image)``, ...).
    ``pyckpt.image.Image`` is this model with its reader and writer.
    """

    head: Head
    tasks: list[Task] = field(default_factory=list)
    files: dict[int, File] = field(default_factory=dict)
    errors: list[ErrorRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        # a kind's accessor adds its empty state on a read: no difference
        if not isinstance(other, Image):
            return NotImplemented
        return (self.head, self.tasks, self.files, self.errors) == (
            other.head,
            other.tasks,
            other.files,
            other.errors,
        ) and _states(self) == _states(other)

    __hash__ = None  # type: ignore[assignment]


def _states(image: Image) -> dict[str, Any]:
    return {k: v for k, v in image.extra.items() if v}


class FdLike(Protocol):
    """An Fd, or a walk's TaskFd: what an fd table is made of."""

    @property
    def fd(self) -> int: ...
    @property
    def objref(self) -> int: ...
    @property
    def cloexec(self) -> bool: ...


def fd_table(fds: Iterable[FdLike]) -> list[tuple[int, int, bool]]:
    """An fd table as (fd, objref, cloexec) in fd order: what two tasks
    sharing one table must both list."""
    return sorted((d.fd, d.objref, d.cloexec) for d in fds)
