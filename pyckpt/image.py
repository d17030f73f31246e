"""The checkpoint image: its model, and its writer and reader (seeds 003, 004).

An image is a stream of records ``struct ckpt_hdr {type, len, ptag}`` whose
bodies are the ``struct ckpt_hdr_*`` of ``ckpt.h``; the grammar is in that
header's comment.  This module holds the in-memory model (``Image`` and its
parts), ``Image.to_bytes()`` and ``Image.from_bytes()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyckpt.abi import FileKind, FMode

__all__ = [
    "Epoll",
    "EpollItem",
    "ErrorRecord",
    "Fd",
    "File",
    "Head",
    "Image",
    "ImageError",
    "Pipe",
    "Task",
]


class ImageError(ValueError):
    """A malformed image; ``offset`` is the byte offset of the bad record."""

    def __init__(self, offset: int, msg: str) -> None:
        super().__init__(f"image offset {offset}: {msg}")
        self.offset = offset
        self.msg = msg


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


@dataclass
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
    count: int = 0  # EVENTFD
    efd_flags: int = 0  # EVENTFD


@dataclass
class Pipe:
    """PIPE: a pipe's buffer, shared by its ends (their ``pipe_objref``)."""

    objref: int
    size: int  # F_GETPIPE_SZ
    data: bytes = b""
    no_reader: bool = False  # read end closed everywhere
    no_writer: bool = False  # write end closed everywhere


@dataclass
class EpollItem:
    """One epoll watch: its target file by objref, as epoll_ctl() took it."""

    target: int
    tfd: int
    events: int
    data: int


@dataclass
class Epoll:
    """EPOLL: the items of one epoll file (written after every task)."""

    objref: int
    items: list[EpollItem] = field(default_factory=list)


@dataclass
class ErrorRecord:
    """ERROR: a ckpt_write_err() entry: a problem or note about an object."""

    err: int  # negative errno, 0 for a note
    msg: str
    objref: int = 0
    pid: int = 0
    fd: int = -1


@dataclass
class Image:
    """A whole checkpoint: tasks in tree order (a parent before its children).

    ``files``, ``pipes`` and ``epolls`` are keyed by objref.
    """

    head: Head
    tasks: list[Task] = field(default_factory=list)
    files: dict[int, File] = field(default_factory=dict)
    pipes: dict[int, Pipe] = field(default_factory=dict)
    epolls: dict[int, Epoll] = field(default_factory=dict)
    errors: list[ErrorRecord] = field(default_factory=list)
