"""The checkpoint image: its model, and its writer and reader (seeds 003, 004).

An image is a stream of records ``struct ckpt_hdr {type, len, ptag}`` whose
bodies are the ``struct ckpt_hdr_*`` of ``ckpt.h``; the grammar is in that
header's comment.  This module holds the in-memory model (``Image`` and its
parts), ``Image.to_bytes()`` and ``Image.from_bytes()``.

Every record is packed and unpacked through cffi from the header's structs:
``_LAYOUTS`` says, per record type, which struct is its fixed part and which
variable parts follow it (each sized by a field of the struct and bounded by a
``CKPT_*_MAX``).  Reading is two layers: ``iter_records()`` decodes and checks
each record by itself (seed 003's ``ckpt_read_obj(len, max)``), ``_Parser``
checks the grammar and everything that spans records (ptags, counts, objrefs,
the checksum).  Any malformed input raises ``ImageError`` and nothing else.
"""

from __future__ import annotations

import functools
import math
import os
import stat
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyckpt.abi import FileKind, FMode, HdrType, ObjType, ffi, lib
from pyckpt.errors import ImageError

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
    "Record",
    "Task",
    "iter_records",
]


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
    efd_sem_unknown: bool = False  # EVENTFD: the kernel did not say (6.1)
    # REG, DIR, FIFO: what fstat() said at checkpoint (restart verifies them)
    st_dev: int = 0
    st_ino: int = 0
    st_mode: int = 0
    st_uid: int = 0
    st_gid: int = 0
    st_size: int = 0


@dataclass
class Pipe:
    """PIPE: a pipe's buffer, shared by its ends (their ``pipe_objref``)."""

    objref: int
    size: int  # F_GETPIPE_SZ
    data: bytes = b""
    no_reader: bool = False  # read end closed everywhere
    no_writer: bool = False  # write end closed everywhere


@dataclass(slots=True)
class EpollItem:
    """One epoll watch: its target file by objref, as epoll_ctl() took it."""

    target: int
    tfd: int
    events: int
    data: int


_ITEM = "struct ckpt_epoll_item"


def _item_view(raw: bytes) -> Any:
    """The items of ``raw`` as a cffi array over its bytes (no copy)."""
    return ffi.from_buffer(f"{_ITEM}[]", raw)


class EpollItems(Sequence[EpollItem]):
    """An EPOLL record's items, decoded one at a time from its bytes: a
    million items stay 24 MiB instead of a million Python objects."""

    __slots__ = ("_raw", "_view")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._view = _item_view(raw)

    def __len__(self) -> int:
        return len(self._view)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        it = self._view[i]
        return EpollItem(it.target, it.tfd, it.events, it.data)

    def __iter__(self) -> Iterator[EpollItem]:
        for it in self._view:
            yield EpollItem(it.target, it.tfd, it.events, it.data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EpollItems):
            return self._raw == other._raw
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"EpollItems({list(self)!r})"


@dataclass
class Epoll:
    """EPOLL: the items of one epoll file (written after every task).

    ``items`` is a list, or an EpollItems as Image.from_bytes() makes it.
    """

    objref: int
    items: Sequence[EpollItem] = field(default_factory=list)


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

    def to_bytes(self) -> bytes:
        """The image as records; ValueError if the model cannot be written."""
        return _write(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Image:
        """Parse and check a whole image; ImageError (only) if malformed.

        Time and memory are linear in the image's size: the model takes a
        small multiple of it (EPOLL items stay packed, see EpollItems)."""
        return _Parser(data if isinstance(data, bytes) else bytes(data)).parse()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a temp file beside ``path``, fsync, rename.

        The temp file is created 0600 (pipe buffers may hold secrets) and is
        removed on any failure, so ``path`` is either the old file or the
        whole new image, never a partial one.
        """
        data = self.to_bytes()  # ValueError before any file is touched
        path = os.fspath(path)
        directory = os.path.dirname(path) or "."
        fd, tmp = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        # the rename itself is durable only once the directory is synced
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, trust: bool = False) -> Image:
        """Read an image file; ImageError if it is not one to believe.

        An image is as trustworthy as whoever could write it (restart gives
        its tasks the credentials it names): a file not owned by root or by
        the caller, or writable by group or others, is refused before it is
        read, unless trust=True.
        """
        with open(path, "rb") as f:
            if not trust:
                check_trusted(os.fstat(f.fileno()), os.fspath(path))
            return cls.from_bytes(f.read())


def check_trusted(st: os.stat_result, path: str) -> None:
    """ImageError unless only root or the caller could have written the file."""
    me = os.geteuid()
    mode = stat.S_IMODE(st.st_mode)
    why = ""
    if not stat.S_ISREG(st.st_mode):
        why = "not a regular file"
    elif st.st_uid not in (0, me):
        why = f"owned by uid {st.st_uid}, neither root nor the caller (uid {me})"
    elif mode & 0o022:
        who = (
            "group and others"
            if mode & 0o022 == 0o022
            else ("its group" if mode & 0o020 else "others")
        )
        why = f"writable by {who}"
    if why:
        raise ImageError(
            0,
            f"{path}: refusing an image {why} (owner uid {st.st_uid}, mode "
            f"{mode:04o}): whoever can write it chooses what restart runs and "
            "as whom (trust it explicitly: --trust-image / trust=True)",
        )


# ---- record layouts ----------------------------------------------------------

_HDR = "struct ckpt_hdr"
_HDR_SIZE: int = ffi.sizeof(_HDR)
_ALIGN = 8  # every record's len is a multiple of 8


@dataclass(frozen=True)
class _Var:
    """A variable part after a record's struct: ``count`` elements."""

    name: str  # its key in Record.fields
    count: str  # the struct field holding its length (bytes or items)
    bound: str  # the CKPT_*_MAX constant bounding that field
    item: str | None = None  # element struct for arrays; None: raw bytes

    @property
    def max(self) -> int:
        return int(getattr(lib, self.bound))

    @property
    def item_size(self) -> int:
        return ffi.sizeof(self.item) if self.item else 1


@dataclass(frozen=True)
class _Layout:
    struct: str
    var: tuple[_Var, ...] = ()

    @property
    def size(self) -> int:
        return ffi.sizeof(self.struct)

    @property
    def max_len(self) -> int:
        """The largest len a valid record of this type can declare."""
        return _pad(self.size + sum(v.max * v.item_size for v in self.var))


_LAYOUTS: dict[int, _Layout] = {
    HdrType.HEAD: _Layout("struct ckpt_hdr_head"),
    HdrType.TREE: _Layout("struct ckpt_hdr_tree"),
    HdrType.TASK: _Layout(
        "struct ckpt_hdr_task",
        (
            _Var("comm", "comm_len", "CKPT_COMM_MAX"),
            _Var("argv", "argv_len", "CKPT_ARGV_MAX"),
            _Var("cwd", "cwd_len", "CKPT_PATH_MAX"),
            _Var("groups", "ngroups", "CKPT_GROUPS_MAX", "uint32_t"),
            _Var("env", "env_len", "CKPT_ENV_MAX"),
            _Var("exe", "exe_len", "CKPT_PATH_MAX"),
            _Var("root", "root_len", "CKPT_PATH_MAX"),
        ),
    ),
    HdrType.FILE: _Layout(
        "struct ckpt_hdr_file", (_Var("path", "path_len", "CKPT_PATH_MAX"),)
    ),
    HdrType.FD: _Layout("struct ckpt_hdr_fd"),
    HdrType.OBJREF: _Layout("struct ckpt_hdr_objref"),
    HdrType.ERROR: _Layout(
        "struct ckpt_hdr_error", (_Var("msg", "msg_len", "CKPT_MSG_MAX"),)
    ),
    HdrType.TAIL: _Layout("struct ckpt_hdr_tail"),
    HdrType.PIPE: _Layout(
        "struct ckpt_hdr_pipe", (_Var("data", "data_len", "CKPT_PIPE_DATA_MAX"),)
    ),
    HdrType.EPOLL: _Layout(
        "struct ckpt_hdr_epoll",
        (_Var("items", "nr_items", "CKPT_EPOLL_ITEMS_MAX", "struct ckpt_epoll_item"),),
    ),
}
# a record type added to ckpt.h must get a layout here before anything runs
if set(_LAYOUTS) != set(HdrType):
    raise ImportError("ckpt.h has a record type that pyckpt.image has no layout for")

_PIPE_KINDS = frozenset({FileKind.PIPE, FileKind.FIFO})
_FMODE_ALL = int(sum(FMode))
_UTS = ("sysname", "release", "version", "machine")


def _pad(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


@functools.cache
def _fields(ctype: str) -> list[tuple[str, Any]]:
    """A struct's data fields (header ``h`` and ``__pad*`` left out)."""
    return [
        (name, f)
        for name, f in ffi.typeof(ctype).fields
        if name != "h" and not name.startswith("__")
    ]


def _pad_offsets(ctype: str) -> tuple[int, ...]:
    """Byte offsets of a struct that no data field covers: __pad fields,
    implicit holes and tail padding; all must be zero in an image."""
    covered: set[int] = set()

    def cover(t: Any, base: int) -> None:
        for name, f in t.fields:
            if name.startswith("__"):
                continue
            if f.type.kind == "struct":
                cover(f.type, base + f.offset)
            else:
                covered.update(
                    range(base + f.offset, base + f.offset + ffi.sizeof(f.type))
                )

    cover(ffi.typeof(ctype), 0)
    return tuple(i for i in range(ffi.sizeof(ctype)) if i not in covered)


_PADS: dict[str, tuple[int, ...]] = {
    ctype: _pad_offsets(ctype)
    for ctype in [_HDR]
    + [lay.struct for lay in _LAYOUTS.values()]
    + [
        v.item
        for lay in _LAYOUTS.values()
        for v in lay.var
        if v.item and v.item.startswith("struct ")
    ]
}


def _unpack(ctype: str, raw: bytes) -> Any:
    """A fresh ``ctype *`` holding a copy of ``raw`` (exactly its size)."""
    p = ffi.new(f"{ctype} *")
    ffi.memmove(p, raw, len(raw))
    return p


def _decode_fields(ctype: str, p: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, f in _fields(ctype):
        if f.type.kind == "array" and f.type.item.kind == "struct":  # rlim[]
            out[name] = [
                {k: int(getattr(e, k)) for k, _ in f.type.item.fields}
                for e in getattr(p, name)
            ]
        elif f.type.kind == "array":  # char[] (uts names): the raw bytes
            out[name] = bytes(ffi.buffer(getattr(p, name)))
        else:
            out[name] = int(getattr(p, name))
    return out


def _nonzero_pad(ctype: str, raw: bytes) -> bool:
    return any(raw[i] for i in _PADS[ctype])


# ---- records: one by one -----------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One record as decoded by ``iter_records()``.

    ``fields`` has the struct's data fields by their ckpt.h names (padding
    left out) and the variable parts: ``comm``, ``argv`` (list of bytes),
    ``cwd``, ``path``, ``data``, ``msg`` as bytes, ``items`` as a list of
    dicts; HEAD's uts names are bytes without their NUL padding.
    """

    offset: int
    tag: int
    type: HdrType
    len: int
    ptag: int
    fields: dict[str, Any]

    @property
    def end(self) -> int:
        return self.offset + self.len


def iter_records(data: bytes, *, packed_items: bool = False) -> Iterator[Record]:
    """Decode the records of ``data`` one at a time, each checked by itself.

    Stops at the end of ``data`` (whether or not a TAIL was seen: the grammar
    is the parser's business) and raises ImageError for anything after a
    TAIL.  Cross-record rules (ptags, counts, objrefs, checksum) are not
    checked here; ``Image.from_bytes()`` does.  ``packed_items``: EPOLL
    items stay bytes (the reader's way) instead of a list of dicts.
    """
    offset, tag = 0, 1
    while offset < len(data):
        rec = _read_obj(data, offset, tag, packed_items)
        yield rec
        offset, tag = rec.end, tag + 1
        if rec.type == HdrType.TAIL and offset < len(data):
            raise ImageError(
                offset, f"{len(data) - offset} bytes after the TAIL record"
            )


def _read_obj(data: bytes, offset: int, tag: int, packed: bool = False) -> Record:
    """Seed 003's ckpt_read_obj(len, max) for the record at ``offset``.

    The exact len is enforced for records without a variable part; for the
    others len must be at most the type's bound and equal to what its fields
    declare (fixed part + variable lengths, padded).  Lengths are checked
    before anything is sliced, so a huge declared len allocates nothing.
    """
    remaining = len(data) - offset
    if remaining < _HDR_SIZE:
        raise ImageError(
            offset, f"truncated record header ({remaining} of {_HDR_SIZE} bytes)"
        )
    hraw = data[offset : offset + _HDR_SIZE]
    h = _unpack(_HDR, hraw)
    rtype, rlen, ptag = int(h.type), int(h.len), int(h.ptag)
    if rtype not in _LAYOUTS:
        raise ImageError(offset, f"unknown record type {rtype}")
    name = f"{HdrType(rtype).name} record"
    if _nonzero_pad(_HDR, hraw):
        raise ImageError(offset, f"{name}: non-zero padding in its header")
    if rlen < _HDR_SIZE:
        raise ImageError(offset, f"{name}: len {rlen} < header size {_HDR_SIZE}")
    if rlen % _ALIGN:
        raise ImageError(offset, f"{name}: len {rlen} not a multiple of {_ALIGN}")
    lay = _LAYOUTS[rtype]
    if not lay.var and rlen != _pad(lay.size):
        raise ImageError(offset, f"{name}: len {rlen}, expected {_pad(lay.size)}")
    if rlen < lay.size:
        raise ImageError(
            offset, f"{name}: len {rlen} shorter than {lay.struct} ({lay.size})"
        )
    if rlen > lay.max_len:
        raise ImageError(offset, f"{name}: len {rlen} exceeds its bound {lay.max_len}")
    if remaining < lay.size:
        raise ImageError(offset, f"{name}: truncated ({remaining} of {rlen} bytes)")

    raw = data[offset : offset + lay.size]
    p = _unpack(lay.struct, raw)
    fields = _decode_fields(lay.struct, p)
    end = lay.size
    for v in lay.var:
        n = fields[v.count]
        if n > v.max:
            raise ImageError(offset, f"{name}: {v.count} {n} exceeds {v.bound} {v.max}")
        end += n * v.item_size
    if _pad(end) != rlen:
        raise ImageError(offset, f"{name}: len {rlen} but its fields make {_pad(end)}")
    if remaining < rlen:
        raise ImageError(offset, f"{name}: truncated ({remaining} of {rlen} bytes)")
    if _nonzero_pad(lay.struct, raw):
        raise ImageError(offset, f"{name}: non-zero padding in {lay.struct}")
    if any(data[offset + end : offset + rlen]):
        raise ImageError(offset, f"{name}: non-zero trailing padding")

    pos = offset + lay.size
    for v in lay.var:
        size = fields[v.count] * v.item_size
        fields[v.name] = data[pos : pos + size]  # arrays: the checks decode
        pos += size

    rec = Record(offset, tag, HdrType(rtype), rlen, ptag, fields)
    _CHECKS[rec.type](rec, name)
    if rec.type == HdrType.EPOLL and not packed:
        fields["items"] = [
            _decode_fields(_ITEM, it) for it in _item_view(fields["items"])
        ]
    return rec


# ---- record-local checks: values that are wrong whatever surrounds them ------


def _bad(rec: Record, name: str, msg: str) -> ImageError:
    return ImageError(rec.offset, f"{name}: {msg}")


def _no_nul(rec: Record, name: str, *keys: str) -> None:
    for key in keys:
        if b"\0" in rec.fields[key]:
            raise _bad(rec, name, f"NUL inside {key}")


def _check_head(rec: Record, name: str) -> None:
    f = rec.fields
    if f["magic"] != lib.CKPT_HEAD_MAGIC:
        raise _bad(rec, name, f"bad magic {f['magic']:#x}")
    if f["format_version"] == 1:
        raise _bad(
            rec,
            name,
            "format version 1 is refused: its TASK records hold no credentials "
            "(uids, gids, groups, limits, executable), so a restart would run "
            "every task as root; checkpoint the tree again with this pyckpt",
        )
    if f["format_version"] == 2:
        raise _bad(
            rec,
            name,
            "format version 2 is refused: its TASK records have another size "
            "and cannot say a task is a zombie or shares its fd table; "
            "checkpoint the tree again with this pyckpt",
        )
    if f["format_version"] != lib.CKPT_FORMAT_VERSION:
        raise _bad(rec, name, f"unsupported format version {f['format_version']}")
    if f["abi_version"] != lib.CKPT_ABI_VERSION:
        raise _bad(rec, name, f"unsupported ABI version {f['abi_version']}")
    if f["time_nsec"] >= 1_000_000_000:
        raise _bad(rec, name, f"time_nsec {f['time_nsec']} >= 10^9")
    for key in _UTS:
        raw = f[key]
        nul = raw.find(b"\0")
        if nul < 0:
            raise _bad(rec, name, f"{key} not NUL-terminated")
        if any(raw[nul:]):
            raise _bad(rec, name, f"non-zero padding after {key}")
        f[key] = raw[:nul]


def _check_tree(rec: Record, name: str) -> None:
    if rec.fields["root_pid"] < 0:
        raise _bad(rec, name, f"root_pid {rec.fields['root_pid']} < 0")


def _strings(rec: Record, name: str, key: str, count: str) -> None:
    raw, n = rec.fields[key], rec.fields[count]
    nuls = raw.count(b"\0")
    if nuls != n or (n and not raw.endswith(b"\0")):
        raise _bad(rec, name, f"{key} has {nuls} NULs for {count} {n}")
    rec.fields[key] = raw[:-1].split(b"\0") if n else []


_TASK_FLAGS = lib.CKPT_TASK_NO_NEW_PRIVS | lib.CKPT_TASK_RLIMITS | lib.CKPT_TASK_ZOMBIE


def _check_task(rec: Record, name: str) -> None:
    f = rec.fields
    if f["pid"] <= 0:
        raise _bad(rec, name, f"pid {f['pid']} <= 0")
    _no_nul(rec, name, "comm", "cwd", "exe", "root")
    _strings(rec, name, "argv", "argc")
    _strings(rec, name, "env", "envc")
    if f["flags"] & ~_TASK_FLAGS:
        raise _bad(rec, name, f"unknown flags {f['flags']:#x}")
    if f["umask"] & ~0o777:
        raise _bad(rec, name, f"umask {f['umask']:#o} out of range")
    if not 1 <= f["nr_threads"] <= lib.CKPT_THREADS_MAX:
        raise _bad(rec, name, f"nr_threads {f['nr_threads']} out of range")
    if f["flags"] & lib.CKPT_TASK_ZOMBIE:
        if not 0 <= f["exit_status"] <= 0xFFFF:
            raise _bad(rec, name, f"exit_status {f['exit_status']:#x} out of range")
        if f["nr_fds"]:
            raise _bad(rec, name, f"a zombie with {f['nr_fds']} fds")
        if f["files_pid"] != f["pid"]:
            raise _bad(rec, name, "a zombie shares no fd table")
    elif f["exit_status"]:
        raise _bad(rec, name, "exit_status set without CKPT_TASK_ZOMBIE")
    f["groups"] = list(ffi.from_buffer("uint32_t[]", f["groups"]))
    if not f["flags"] & lib.CKPT_TASK_RLIMITS and any(
        r["cur"] or r["max"] for r in f["rlim"]
    ):
        raise _bad(rec, name, "rlim[] set without CKPT_TASK_RLIMITS")
    for i, r in enumerate(f["rlim"]):
        if r["cur"] > r["max"]:
            raise _bad(rec, name, f"rlim[{i}]: soft {r['cur']} above hard {r['max']}")


def _table(t: Task) -> list[tuple[int, int, bool]]:
    return sorted((fd.fd, fd.objref, fd.cloexec) for fd in t.fds)


def _check_fd(rec: Record, name: str) -> None:
    f = rec.fields
    if f["fd"] < 0:
        raise _bad(rec, name, f"fd {f['fd']} < 0")
    if f["objref"] <= 0:
        raise _bad(rec, name, f"objref {f['objref']} <= 0")
    if f["flags"] & ~lib.CKPT_FD_CLOEXEC:
        raise _bad(rec, name, f"unknown flags {f['flags']:#x}")


def _check_file(rec: Record, name: str) -> None:
    f = rec.fields
    if f["objref"] <= 0:
        raise _bad(rec, name, f"objref {f['objref']} <= 0")
    if f["kind"] not in FileKind._value2member_map_:
        raise _bad(rec, name, f"kind {f['kind']} out of range")
    if f["f_mode"] & ~_FMODE_ALL:
        raise _bad(rec, name, f"f_mode {f['f_mode']:#x} out of range")
    if f["flags"] & ~(lib.CKPT_FILE_EXTERNAL | lib.CKPT_FILE_EFD_SEM_UNKNOWN):
        raise _bad(rec, name, f"unknown flags {f['flags']:#x}")
    if f["kind"] in _PIPE_KINDS and f["pipe_objref"] <= 0:
        raise _bad(rec, name, f"pipe_objref {f['pipe_objref']} <= 0 on a pipe end")
    if f["kind"] not in _PIPE_KINDS and f["pipe_objref"]:
        kind = FileKind(f["kind"]).name
        raise _bad(rec, name, f"pipe_objref {f['pipe_objref']} on a {kind} file")
    _no_nul(rec, name, "path")


def _check_pipe(rec: Record, name: str) -> None:
    f = rec.fields
    if f["objref"] <= 0:
        raise _bad(rec, name, f"objref {f['objref']} <= 0")
    if f["flags"] & ~(lib.CKPT_PIPE_NO_READER | lib.CKPT_PIPE_NO_WRITER):
        raise _bad(rec, name, f"unknown flags {f['flags']:#x}")


def _check_objref(rec: Record, name: str) -> None:
    f = rec.fields
    if f["objref"] <= 0:
        raise _bad(rec, name, f"objref {f['objref']} <= 0")
    if f["type"] != ObjType.FILE:
        raise _bad(rec, name, f"type {f['type']} is not CKPT_OBJ_FILE")


def _check_epoll(rec: Record, name: str) -> None:
    f = rec.fields
    if f["objref"] <= 0:
        raise _bad(rec, name, f"objref {f['objref']} <= 0")
    # one int per item, not a tuple: memory stays a small multiple of the record
    seen: set[int] = set()
    for i, it in enumerate(_item_view(f["items"])):
        target, tfd = it.target, it.tfd
        if getattr(it, "__pad"):
            raise _bad(rec, name, f"non-zero padding in item {i}")
        if target <= 0:
            raise _bad(rec, name, f"item {i}: target {target} <= 0")
        key = (target << 32) | (tfd & 0xFFFFFFFF)
        if key in seen:
            raise _bad(rec, name, f"item {i}: target {target} fd {tfd} twice")
        seen.add(key)


def _check_error(rec: Record, name: str) -> None:
    f = rec.fields
    if f["err"] > 0:
        raise _bad(rec, name, f"err {f['err']} > 0 (a negative errno or 0)")
    if f["objref"] < 0 or f["pid"] < 0 or f["fd"] < -1:
        raise _bad(rec, name, "negative objref, pid or fd")
    _no_nul(rec, name, "msg")


def _check_tail(rec: Record, name: str) -> None:
    if rec.fields["magic"] != lib.CKPT_TAIL_MAGIC:
        raise _bad(rec, name, f"bad magic {rec.fields['magic']:#x}")


_CHECKS = {
    HdrType.HEAD: _check_head,
    HdrType.TREE: _check_tree,
    HdrType.TASK: _check_task,
    HdrType.FD: _check_fd,
    HdrType.FILE: _check_file,
    HdrType.PIPE: _check_pipe,
    HdrType.OBJREF: _check_objref,
    HdrType.EPOLL: _check_epoll,
    HdrType.ERROR: _check_error,
    HdrType.TAIL: _check_tail,
}


# ---- the reader: the grammar and what spans records ---------------------------


def _str(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _names(types: tuple[HdrType, ...]) -> str:
    return " or ".join(t.name for t in types)


@dataclass
class _Def:
    """Where an objref was defined: its FILE (kind) or its PIPE record."""

    what: str  # "file" or "pipe"
    rec: Record
    epoll_at: int | None = None  # offset of its EPOLL record, once seen


class _Parser:
    """HEAD TREE {TASK {FD (FILE [PIPE] | OBJREF)}} {EPOLL} TAIL, ERROR anywhere."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.records = iter_records(data, packed_items=True)
        self.peeked: Record | None = None
        self.image: Image | None = None
        self.defs: dict[int, _Def] = {}
        self.errors: list[ErrorRecord] = []

    def _pull(self) -> Record | None:
        """The next record, ERROR records taken into ``errors`` on the way."""
        if self.peeked is not None:
            rec, self.peeked = self.peeked, None
            return rec
        for rec in self.records:
            if rec.type != HdrType.ERROR:
                return rec
            self._top(rec)
            f = rec.fields
            self.errors.append(
                ErrorRecord(f["err"], _str(f["msg"]), f["objref"], f["pid"], f["fd"])
            )
        return None

    def _peek(self) -> Record | None:
        if self.peeked is None:
            self.peeked = self._pull()
        return self.peeked

    def _read(self, expected: tuple[HdrType, ...], why: str = "") -> Record:
        rec = self._pull()
        what = _names(expected) + " record"
        why = f" ({why})" if why else ""
        if rec is None:
            raise ImageError(
                len(self.data), f"image truncated: ends where {what} is due{why}"
            )
        if rec.type not in expected:
            raise ImageError(
                rec.offset, f"{rec.type.name} record where {what} is due{why}"
            )
        return rec

    def _ptag(self, rec: Record, ptag: int, parent: str) -> None:
        if rec.ptag != ptag:
            raise ImageError(
                rec.offset,
                f"{rec.type.name} record: ptag {rec.ptag}, expected {ptag} ({parent})",
            )

    def _top(self, rec: Record) -> None:
        self._ptag(rec, 0, "top level")

    def parse(self) -> Image:
        # HEAD first and by itself: an ERROR may not come before it
        first = next(self.records, None)
        if first is None:
            raise ImageError(0, "image truncated: ends where HEAD record is due")
        if first.type != HdrType.HEAD:
            raise ImageError(0, f"{first.type.name} record where HEAD record is due")
        self._top(first)
        image = Image(head=self._head(first))
        tree = self._read((HdrType.TREE,))
        self._top(tree)
        nr_tasks, root_pid = tree.fields["nr_tasks"], tree.fields["root_pid"]
        if nr_tasks == 0 and root_pid != 0:
            raise ImageError(tree.offset, f"TREE record: root_pid {root_pid}, no tasks")
        pids: set[int] = set()
        for i in range(nr_tasks):
            image.tasks.append(self._task(image, tree, i, pids))
        while True:
            rec = self._read((HdrType.EPOLL, HdrType.TAIL), "after the last task")
            if rec.type == HdrType.TAIL:
                break
            epoll = self._epoll(rec)
            image.epolls[epoll.objref] = epoll
        self._tail(rec)
        image.errors = self.errors
        return image

    def _head(self, rec: Record) -> Head:
        f = rec.fields
        return Head(
            time=f["time_sec"] + f["time_nsec"] / 1e9,
            sysname=_str(f["sysname"]),
            release=_str(f["release"]),
            version=_str(f["version"]),
            machine=_str(f["machine"]),
            format_version=f["format_version"],
            abi_version=f["abi_version"],
        )

    def _task(self, image: Image, tree: Record, i: int, pids: set[int]) -> Task:
        nr = tree.fields["nr_tasks"]
        rec = self._read((HdrType.TASK,), f"TREE declared {nr} tasks, this is #{i + 1}")
        self._ptag(rec, tree.tag, "its TREE")
        f = rec.fields
        pid, ppid = f["pid"], f["ppid"]
        if pid in pids:
            raise ImageError(rec.offset, f"TASK record: pid {pid} twice")
        if i == 0 and pid != tree.fields["root_pid"]:
            raise ImageError(
                rec.offset,
                f"TASK record: root pid {pid} is not TREE's root_pid "
                f"{tree.fields['root_pid']}",
            )
        if i > 0 and ppid not in pids:
            raise ImageError(
                rec.offset, f"TASK record: ppid {ppid} is not an earlier task's pid"
            )
        files_pid = f["files_pid"]
        if files_pid != pid and files_pid not in pids:
            raise ImageError(
                rec.offset,
                f"TASK record: files_pid {files_pid} is neither its pid nor an "
                "earlier task's",
            )
        pids.add(pid)
        task = Task(
            pid=pid,
            ppid=ppid,
            sid=f["sid"],
            pgid=f["pgid"],
            comm=_str(f["comm"]),
            argv=[_str(a) for a in f["argv"]],
            cwd=_str(f["cwd"]),
            ruid=f["ruid"],
            euid=f["euid"],
            suid=f["suid"],
            fsuid=f["fsuid"],
            rgid=f["rgid"],
            egid=f["egid"],
            sgid=f["sgid"],
            fsgid=f["fsgid"],
            groups=f["groups"],
            umask=f["umask"],
            no_new_privs=bool(f["flags"] & lib.CKPT_TASK_NO_NEW_PRIVS),
            rlimits=[(r["cur"], r["max"]) for r in f["rlim"]]
            if f["flags"] & lib.CKPT_TASK_RLIMITS
            else None,
            env=[_str(e) for e in f["env"]],
            exe=_str(f["exe"]),
            root=_str(f["root"]),
            exit_status=f["exit_status"]
            if f["flags"] & lib.CKPT_TASK_ZOMBIE
            else None,
            files_pid=0 if files_pid == pid else files_pid,
            nr_threads=f["nr_threads"],
        )
        numbers: set[int] = set()
        for j in range(f["nr_fds"]):
            fd, at = self._fd(image, rec, j)
            if fd.fd in numbers:
                raise ImageError(at, f"FD record: fd {fd.fd} twice")
            numbers.add(fd.fd)
            task.fds.append(fd)
        if task.files_pid:
            owner = next(t for t in image.tasks if t.pid == task.files_pid)
            if owner.files_pid or owner.exit_status is not None:
                raise ImageError(
                    rec.offset,
                    f"TASK record: files_pid {task.files_pid} is not a live task "
                    "with a table of its own",
                )
            if _table(owner) != _table(task):
                raise ImageError(
                    rec.offset,
                    f"TASK record: shares the fd table of task {owner.pid} "
                    "but lists other fds",
                )
        return task

    def _fd(self, image: Image, task: Record, j: int) -> tuple[Fd, int]:
        """One FD and the FILE (+PIPE) or OBJREF after it; its offset too."""
        nr = task.fields["nr_fds"]
        why = f"TASK {task.fields['pid']} declared {nr} fds, this is #{j + 1}"
        rec = self._read((HdrType.FD,), why)
        self._ptag(rec, task.tag, "its TASK")
        objref = rec.fields["objref"]
        nxt = self._read((HdrType.FILE, HdrType.OBJREF), "after an FD")
        self._ptag(nxt, rec.tag, "its FD")
        if nxt.fields["objref"] != objref:
            raise ImageError(
                nxt.offset,
                f"{nxt.type.name} record: objref {nxt.fields['objref']} differs from "
                f"its FD's {objref}",
            )
        known = self.defs.get(objref)
        if nxt.type == HdrType.FILE:
            if known is not None:
                raise ImageError(
                    nxt.offset,
                    f"FILE record: objref {objref} defined twice (first by the "
                    f"{known.rec.type.name} record at offset {known.rec.offset})",
                )
            self._file(image, nxt)
        elif known is None:
            raise ImageError(
                rec.offset, f"FD record: objref {objref} names nothing yet"
            )
        elif known.what != "file":
            raise ImageError(rec.offset, f"FD record: objref {objref} names a pipe")
        cloexec = bool(rec.fields["flags"] & lib.CKPT_FD_CLOEXEC)
        return Fd(rec.fields["fd"], objref, cloexec), rec.offset

    def _file(self, image: Image, rec: Record) -> None:
        f = rec.fields
        self.defs[f["objref"]] = _Def("file", rec)
        kind = FileKind(f["kind"])
        image.files[f["objref"]] = File(
            objref=f["objref"],
            kind=kind,
            f_flags=f["f_flags"],
            f_mode=FMode(f["f_mode"]),
            pos=f["pos"],
            path=_str(f["path"]),
            pipe_objref=f["pipe_objref"],
            external=bool(f["flags"] & lib.CKPT_FILE_EXTERNAL),
            count=f["count"],
            efd_flags=f["efd_flags"],
            efd_sem_unknown=bool(f["flags"] & lib.CKPT_FILE_EFD_SEM_UNKNOWN),
            st_dev=f["st_dev"],
            st_ino=f["st_ino"],
            st_mode=f["st_mode"],
            st_uid=f["st_uid"],
            st_gid=f["st_gid"],
            st_size=f["st_size"],
        )
        pobj = f["pipe_objref"]
        known = self.defs.get(pobj) if kind in _PIPE_KINDS else None
        if kind in _PIPE_KINDS and known is None:
            pipe = self._read((HdrType.PIPE,), f"FILE with a new pipe_objref {pobj}")
            self._pipe(image, rec, pipe)
        elif known is not None and known.what != "pipe":
            raise ImageError(
                rec.offset, f"FILE record: pipe_objref {pobj} is a file's objref"
            )
        nxt = self._peek()
        if nxt is not None and nxt.type == HdrType.PIPE:
            why = "its pipe is already defined" if kind in _PIPE_KINDS else "not a pipe"
            raise ImageError(nxt.offset, f"PIPE record after a FILE: {why}")

    def _pipe(self, image: Image, file: Record, rec: Record) -> None:
        self._ptag(rec, file.tag, "its FILE")
        f = rec.fields
        if f["objref"] != file.fields["pipe_objref"]:
            raise ImageError(
                rec.offset,
                f"PIPE record: objref {f['objref']} differs from its FILE's "
                f"pipe_objref {file.fields['pipe_objref']}",
            )
        self.defs[f["objref"]] = _Def("pipe", rec)
        image.pipes[f["objref"]] = Pipe(
            objref=f["objref"],
            size=f["size"],
            data=f["data"],
            no_reader=bool(f["flags"] & lib.CKPT_PIPE_NO_READER),
            no_writer=bool(f["flags"] & lib.CKPT_PIPE_NO_WRITER),
        )

    def _epoll(self, rec: Record) -> Epoll:
        objref = rec.fields["objref"]
        known = self.defs.get(objref)
        if (
            known is None
            or known.what != "file"
            or known.rec.fields["kind"] != FileKind.EPOLL
        ):
            raise ImageError(
                rec.offset, f"EPOLL record: objref {objref} is not an EPOLL file"
            )
        self._ptag(rec, known.rec.tag, "its FILE")
        if known.epoll_at is not None:
            raise ImageError(
                rec.offset,
                f"EPOLL record: objref {objref} defined twice (first at offset "
                f"{known.epoll_at})",
            )
        known.epoll_at = rec.offset
        raw = rec.fields["items"]
        for i, it in enumerate(_item_view(raw)):
            target = it.target
            d = self.defs.get(target)
            if d is None or d.what != "file":
                raise ImageError(
                    rec.offset,
                    f"EPOLL record: item {i}: target {target} names no file",
                )
        return Epoll(objref, EpollItems(raw))

    def _tail(self, rec: Record) -> None:
        self._top(rec)
        f = rec.fields
        if f["nr_records"] != rec.tag:
            raise ImageError(
                rec.offset,
                f"TAIL record: nr_records {f['nr_records']}, found {rec.tag}",
            )
        crc = zlib.crc32(self.data[: rec.offset])
        if f["checksum"] != crc:
            raise ImageError(
                rec.offset,
                f"TAIL record: checksum {f['checksum']:#010x}, computed {crc:#010x}",
            )
        # iter_records raises for bytes after TAIL when asked for more
        if rec.end != len(self.data):
            raise ImageError(
                rec.end, f"{len(self.data) - rec.end} bytes after the TAIL record"
            )


# ---- the writer ---------------------------------------------------------------


def _pack(
    rtype: HdrType, ptag: int, fields: dict[str, Any], var: dict[str, Any] | None = None
) -> bytes:
    """One record: its struct from ``fields``, then its variable parts (whose
    length fields are filled here), zero-padded to a multiple of 8."""
    lay = _LAYOUTS[rtype]
    name = f"{rtype.name} record"
    parts = []
    try:
        p = ffi.new(f"{lay.struct} *")
        for v in lay.var:
            value = (var or {})[v.name]
            if v.item is None:
                count, raw = len(value), bytes(value)
            elif isinstance(value, (bytes, bytearray, memoryview)):  # packed items
                count, raw = len(value) // v.item_size, bytes(value)
            else:
                count = len(value)
                raw = bytes(ffi.buffer(ffi.new(f"{v.item}[]", value))) if value else b""
            if count > v.max:
                raise ValueError(
                    f"{v.name}: {v.count} {count} exceeds {v.bound} {v.max}"
                )
            fields[v.count] = count
            parts.append(raw)
        body = b"".join(parts)
        rlen = _pad(lay.size + len(body))
        p.h.type, p.h.len, p.h.ptag = rtype, rlen, ptag
        for key, value in fields.items():
            setattr(p, key, value)
    except (OverflowError, TypeError, IndexError, ValueError) as e:
        raise ValueError(f"{name}: {e}") from None
    out = bytes(ffi.buffer(p)) + body
    return out + bytes(rlen - len(out))


def _enc(s: str, what: str) -> bytes:
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what}: {e}") from None


def _split_time(t: float) -> tuple[int, int]:
    """Float seconds -> (sec, nsec), nsec in [0, 10^9)."""
    try:
        sec = math.floor(t)
    except (ValueError, OverflowError) as e:
        raise ValueError(f"HEAD time {t}: {e}") from None
    nsec = round((t - sec) * 1e9)
    if nsec >= 1_000_000_000:
        sec, nsec = sec + 1, nsec - 1_000_000_000
    return sec, nsec


def _check_model(image: Image) -> None:
    """What the writer cannot express: objects nothing references, references
    to nothing, mismatched keys.  (The rest is caught by reading back.)"""
    for what, table in (
        ("files", image.files),
        ("pipes", image.pipes),
        ("epolls", image.epolls),
    ):
        for key, obj in table.items():
            if key != obj.objref:
                raise ValueError(f"Image.{what}[{key}] has objref {obj.objref}")
    both = image.files.keys() & image.pipes.keys()
    if both:
        raise ValueError(f"objrefs {sorted(both)} are both a file and a pipe")
    used: set[int] = set()
    for task in image.tasks:
        for fd in task.fds:
            if fd.objref not in image.files:
                raise ValueError(
                    f"task {task.pid} fd {fd.fd}: objref {fd.objref} not in Image.files"
                )
            used.add(fd.objref)
    unused = sorted(image.files.keys() - used)
    if unused:
        raise ValueError(f"files {unused} are referenced by no Fd: cannot be written")
    pipes_used: set[int] = set()
    for f in image.files.values():
        if f.kind in _PIPE_KINDS:
            if f.pipe_objref not in image.pipes:
                raise ValueError(
                    f"file {f.objref}: pipe_objref {f.pipe_objref} not in Image.pipes"
                )
            pipes_used.add(f.pipe_objref)
    unused = sorted(image.pipes.keys() - pipes_used)
    if unused:
        raise ValueError(f"pipes {unused} are referenced by no file: cannot be written")
    bad = sorted(
        k
        for k in image.epolls
        if k not in image.files or image.files[k].kind != FileKind.EPOLL
    )
    if bad:
        raise ValueError(f"epolls {bad} are not EPOLL files: cannot be written")


def _write(image: Image) -> bytes:
    _check_model(image)
    out: list[bytes] = []

    def add(
        rtype: HdrType,
        ptag: int,
        fields: dict[str, Any],
        var: dict[str, Any] | None = None,
    ) -> int:
        out.append(_pack(rtype, ptag, fields, var))
        return len(out)  # its tag

    h = image.head
    sec, nsec = _split_time(h.time)
    add(
        HdrType.HEAD,
        0,
        {
            "magic": lib.CKPT_HEAD_MAGIC,
            "format_version": h.format_version or lib.CKPT_FORMAT_VERSION,
            "abi_version": h.abi_version or lib.CKPT_ABI_VERSION,
            "time_sec": sec,
            "time_nsec": nsec,
        }
        | {key: _enc(getattr(h, key), f"HEAD {key}") for key in _UTS},
    )
    tasks = image.tasks
    tree = add(
        HdrType.TREE,
        0,
        {"nr_tasks": len(tasks), "root_pid": tasks[0].pid if tasks else 0},
    )
    file_tags: dict[int, int] = {}  # objref -> tag of its FILE (EPOLL's ptag)
    pipes_done: set[int] = set()
    for t in tasks:
        argv = b"".join(_enc(a, f"task {t.pid} argv") + b"\0" for a in t.argv)
        env = b"".join(_enc(e, f"task {t.pid} env") + b"\0" for e in t.env)
        flags = lib.CKPT_TASK_NO_NEW_PRIVS if t.no_new_privs else 0
        if t.exit_status is not None:
            flags |= lib.CKPT_TASK_ZOMBIE
        rlim = [{"cur": 0, "max": 0}] * RLIM_NLIMITS
        if t.rlimits is not None:
            if len(t.rlimits) != RLIM_NLIMITS:
                raise ValueError(
                    f"task {t.pid}: {len(t.rlimits)} rlimits, not {RLIM_NLIMITS}"
                )
            flags |= lib.CKPT_TASK_RLIMITS
            rlim = [{"cur": c, "max": m} for c, m in t.rlimits]
        task = add(
            HdrType.TASK,
            tree,
            {
                "pid": t.pid,
                "ppid": t.ppid,
                "sid": t.sid,
                "pgid": t.pgid,
                "nr_fds": len(t.fds),
                "argc": len(t.argv),
                "envc": len(t.env),
                "flags": flags,
                "ruid": t.ruid,
                "euid": t.euid,
                "suid": t.suid,
                "fsuid": t.fsuid,
                "rgid": t.rgid,
                "egid": t.egid,
                "sgid": t.sgid,
                "fsgid": t.fsgid,
                "umask": t.umask,
                "exit_status": t.exit_status or 0,
                "files_pid": t.files_pid or t.pid,
                "nr_threads": t.nr_threads,
                "rlim": rlim,
            },
            {
                "comm": _enc(t.comm, f"task {t.pid} comm"),
                "argv": argv,
                "cwd": _enc(t.cwd, f"task {t.pid} cwd"),
                "groups": list(t.groups),
                "env": env,
                "exe": _enc(t.exe, f"task {t.pid} exe"),
                "root": _enc(t.root, f"task {t.pid} root"),
            },
        )
        for fd in t.fds:
            flags = lib.CKPT_FD_CLOEXEC if fd.cloexec else 0
            fdtag = add(
                HdrType.FD, task, {"fd": fd.fd, "objref": fd.objref, "flags": flags}
            )
            if fd.objref in file_tags:
                add(HdrType.OBJREF, fdtag, {"objref": fd.objref, "type": ObjType.FILE})
                continue
            f = image.files[fd.objref]
            file_tags[f.objref] = add(
                HdrType.FILE,
                fdtag,
                {
                    "objref": f.objref,
                    "kind": f.kind,
                    "f_flags": f.f_flags,
                    "f_mode": f.f_mode,
                    "pos": f.pos,
                    "pipe_objref": f.pipe_objref,
                    "flags": (lib.CKPT_FILE_EXTERNAL if f.external else 0)
                    | (lib.CKPT_FILE_EFD_SEM_UNKNOWN if f.efd_sem_unknown else 0),
                    "count": f.count,
                    "efd_flags": f.efd_flags,
                    "st_dev": f.st_dev,
                    "st_ino": f.st_ino,
                    "st_mode": f.st_mode,
                    "st_uid": f.st_uid,
                    "st_gid": f.st_gid,
                    "st_size": f.st_size,
                },
                {"path": _enc(f.path, f"file {f.objref} path")},
            )
            if f.kind in _PIPE_KINDS and f.pipe_objref not in pipes_done:
                pipes_done.add(f.pipe_objref)
                pipe = image.pipes[f.pipe_objref]
                flags = (lib.CKPT_PIPE_NO_READER if pipe.no_reader else 0) | (
                    lib.CKPT_PIPE_NO_WRITER if pipe.no_writer else 0
                )
                add(
                    HdrType.PIPE,
                    file_tags[f.objref],
                    {"objref": pipe.objref, "flags": flags, "size": pipe.size},
                    {"data": pipe.data},
                )
    for objref in sorted(image.epolls):
        its = image.epolls[objref].items
        if isinstance(its, EpollItems):
            items: Any = its._raw  # already packed
        else:
            items = [
                {"target": i.target, "tfd": i.tfd, "events": i.events, "data": i.data}
                for i in its
            ]
        add(HdrType.EPOLL, file_tags[objref], {"objref": objref}, {"items": items})
    for e in image.errors:
        add(
            HdrType.ERROR,
            0,
            {"err": e.err, "objref": e.objref, "pid": e.pid, "fd": e.fd},
            {"msg": _enc(e.msg, "error msg")},
        )
    body = b"".join(out)
    tail = {
        "magic": lib.CKPT_TAIL_MAGIC,
        "nr_records": len(out) + 1,
        "checksum": zlib.crc32(body),
    }
    data = body + _pack(HdrType.TAIL, 0, tail)
    # never hand out an image the reader refuses (NULs, bounds, pid order...)
    try:
        _Parser(data).parse()
    except ImageError as e:
        raise ValueError(f"the model does not make a valid image: {e}") from None
    return data
