"""The checkpoint image: its writer and reader (linux-cr's record header
{type, len, ptag} and ``ckpt_read_obj(len, max)``).

An image is a stream of records ``struct ckpt_hdr {type, len, ptag}`` whose
bodies are the ``struct ckpt_hdr_*`` of ``ckpt.h``; the grammar is in that
header's comment.  This module holds the writer and the reader of the model
(``pyckpt.model``): ``Image.to_bytes()``, ``Image.from_bytes()``, ``save()``
and ``load()``.

Every record is packed and unpacked with one precompiled ``struct.Struct``
per header struct, derived from cffi's offsets and sizes (``records.Codec``):
``LAYOUTS`` says, per record type, which struct is its fixed part and which
variable parts follow it (each sized by a field of the struct and bounded by a
``CKPT_*_MAX``).  Reading is two layers: ``iter_records()`` decodes and checks
each record by itself (linux-cr's ``ckpt_read_obj(len, max)``), ``_Parser``
checks the grammar and everything that spans records (ptags, counts, objrefs,
the checksum).  Any malformed input raises ``ImageError`` and nothing else.

Writing checks the model once instead of reading its own output back: the
tree, FD and FILE rules on the model (``_check_model``), every other record
by itself as it is packed; a kind whose reader checks across records more
than its ``check_model`` mirrors (epoll, unix, tty, memfd, signalfd,
timerfd) still has the written image parsed again.
"""

from __future__ import annotations

import errno as _errno
import functools
import math
import os
import stat
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pyckpt import kinds, model
from pyckpt.abi import FileKind, FMode, HdrType, ObjType, ffi, lib
from pyckpt.errors import ImageError
from pyckpt.limits import Limits
from pyckpt.model import RLIM_NLIMITS, ErrorRecord, Fd, File, Head, Task, fd_table
from pyckpt.names import type_name
from pyckpt.records import (
    ALIGN,
    CHECKS,
    HDR,
    HDR_SIZE,
    LAYOUTS,
    Layout,
    Record,
    Var,
    bad,
    codec,
    decode_fields,
    enc,
    no_nul,
    pack,
    packer,
    pad,
    register,
    text,
)

__all__ = [
    "ErrorRecord",
    "Fd",
    "File",
    "Head",
    "Image",
    "ImageError",
    "Record",
    "Task",
    "iter_records",
]


class Image(model.Image):
    """The model (``pyckpt.model.Image``) with its writer and reader."""

    def to_bytes(self) -> bytes:
        """The image as records; ValueError if the model cannot be written."""
        return _write(self)

    @classmethod
    def from_bytes(cls, data: bytes, *, limits: Limits | None = None) -> Image:
        """Parse and check a whole image; ImageError (only) if malformed.

        Time and memory are linear in the image's size: the model takes a
        small multiple of it (EPOLL items stay packed, see EpollItems; a
        TASK record holds at most one string per 6 bytes beyond its first
        64).  ``limits`` (restart's): the tasks, fds, strings, groups and
        saved data are counted as their records arrive, and the first
        record that crosses one is refused (ImageError, errno E2BIG)
        before anything after it is read."""
        raw = data if isinstance(data, bytes) else bytes(data)
        return _Parser(raw, limits).parse()

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
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        trust: bool = False,
        limits: Limits | None = None,
    ) -> Image:
        """Read an image file; ImageError if it is not one to believe.

        An image is as trustworthy as whoever could write it (restart gives
        its tasks the credentials it names), and so is every directory
        above it (whoever can write one can put another file under the
        name).  The file is refused, before it is read, unless it is a
        regular file owned by root or the caller and not writable by group
        or others, in directories owned by root or the caller and not
        writable by group or others (sticky ones aside): OpenSSH's rule for
        its keys.  trust=True skips the ownership checks; a symbolic link
        is never followed and a FIFO or device never opened, trusted or not.
        ``limits``: as from_bytes() (restart passes its own).
        """
        fd = open_image(path, trust=trust)
        with os.fdopen(fd, "rb") as f:
            return cls.from_bytes(f.read(), limits=limits)


def _refuse(path: str, why: str, trust_hint: bool = True) -> ImageError:
    hint = " (trust it explicitly: --trust-image / trust=True)" if trust_hint else ""
    return ImageError(0, f"{path}: refusing an image {why}{hint}")


def open_image(path: str | os.PathLike[str], *, trust: bool = False) -> int:
    """An fd (read-only, close-on-exec) on the image file at ``path``, or
    ImageError naming the path and why it is not opened.

    The last component is looked up in its directory's fd, never followed
    (O_NOFOLLOW): a symbolic link is refused, trusted or not.  Its type is
    checked on an O_PATH fd before anything opens it (no FIFO waits for a
    writer, no device runs its open), and the file opened for reading must
    be that same inode.  Without ``trust``, the file and each directory
    above it are checked as ``check_trusted`` and ``check_directory`` say,
    walking up from the directory the file really is in (``..`` of an
    O_PATH fd each time, not the path's text); a symbolic link on the way
    to that directory is followed only as ``_open_directory`` says."""
    name = os.fspath(path)
    head, base = os.path.split(name)
    if not base or base in (".", ".."):
        raise _refuse(name, "that names a directory", False)
    try:
        dfd = _open_directory(head or ".", name, trust)
    except OSError as e:
        raise ImageError(
            0, f"{name}: cannot open its directory {head or '.'}: {e.strerror}"
        ) from e
    try:
        try:
            pfd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as e:
            raise ImageError(0, f"{name}: cannot open it: {e.strerror}") from e
        try:
            st = os.fstat(pfd)
        finally:
            os.close(pfd)
        if stat.S_ISLNK(st.st_mode):
            raise _refuse(
                name,
                "that is a symbolic link (never followed: name the image itself)",
                False,
            )
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(
                name, f"that is not a regular file (a {type_name(st.st_mode)})", False
            )
        if not trust:
            check_trusted(st, name)
            _check_directories(dfd, head or ".", name)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
        try:
            fd = os.open(base, flags | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as e:
            raise ImageError(0, f"{name}: cannot open it: {e.strerror}") from e
    finally:
        os.close(dfd)
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise _refuse(name, "replaced while it was checked", False)
    return fd


def _open_directory(head: str, path: str, trust: bool) -> int:
    """An O_PATH fd on the directory ``head``, looked up one component at a
    time with O_NOFOLLOW: a symbolic link on the way is followed only if
    root or the caller owns it and (unless ``trust``) every directory above
    it passes ``_check_directories``, so no one else's link (or a link in
    someone else's directory) chooses where the image is read from."""
    me = os.geteuid()
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/" if head.startswith("/") else ".", flags | os.O_DIRECTORY)
    parts = [p for p in head.split("/") if p and p != "."]
    parts.reverse()  # a stack: the next component last
    hops = 0
    try:
        while parts:
            comp = parts.pop()
            nfd = os.open(comp, flags, dir_fd=fd)
            st = os.fstat(nfd)
            if stat.S_ISLNK(st.st_mode):
                os.close(nfd)
                hops += 1
                if hops > 40:
                    raise OSError(_errno.ELOOP, os.strerror(_errno.ELOOP))
                if not trust:
                    where = _dir_name(fd, head) + "/" + comp
                    if st.st_uid not in (0, me):
                        raise _refuse(
                            path,
                            f"reached through a symbolic link owned by uid "
                            f"{st.st_uid}, neither root nor the caller ({where})",
                        )
                    _check_directories(fd, head, path, f"the link {where}")
                target = os.readlink(comp, dir_fd=fd)
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", flags | os.O_DIRECTORY)
                parts.extend(reversed([p for p in target.split("/") if p and p != "."]))
                continue
            if not stat.S_ISDIR(st.st_mode):
                os.close(nfd)
                raise OSError(_errno.ENOTDIR, os.strerror(_errno.ENOTDIR))
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _writers(mode: int) -> str:
    if mode & 0o022 == 0o022:
        return "group and others"
    return "its group" if mode & 0o020 else "others"


def _check_directories(dfd: int, head: str, path: str, via: str = "") -> None:
    """ImageError unless the directory ``dfd`` (the image's) and each one
    above it, up to the root, is owned by root or the caller and writable
    by no one else (a sticky directory may be: no one else can rename or
    remove the caller's or root's files in it)."""
    me = os.geteuid()
    cur = os.dup(dfd)
    lexical = head
    try:
        st = os.fstat(cur)
        while True:
            mode = stat.S_IMODE(st.st_mode)
            why = ""
            if st.st_uid not in (0, me):
                why = (
                    f"owned by uid {st.st_uid}, neither root nor the caller (uid {me})"
                )
            elif mode & 0o022 and not mode & stat.S_ISVTX:
                why = f"writable by {_writers(mode)} and not sticky"
            if why:
                where = _dir_name(cur, lexical)
                raise _refuse(
                    path,
                    f"{'reached through ' + via + ' ' if via else ''}"
                    f"in a directory {why} ({where}: owner uid {st.st_uid}, mode "
                    f"{mode:04o}): whoever can write it can put another file "
                    "under this name",
                )
            up = os.open(
                "..",
                os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=cur,
            )
            os.close(cur)
            cur = up
            above = os.fstat(cur)
            if (above.st_dev, above.st_ino) == (st.st_dev, st.st_ino):
                return  # the root: its .. is itself
            st = above
            lexical = os.path.join(lexical, "..")
    except OSError as e:
        raise ImageError(
            0, f"{path}: cannot check the directories above it: {e.strerror}"
        ) from e
    finally:
        os.close(cur)


def _dir_name(fd: int, lexical: str) -> str:
    """A directory's name for a message: where /proc says it is."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.normpath(lexical)


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
        why = f"writable by {_writers(mode)}"
    if why:
        raise ImageError(
            0,
            f"{path}: refusing an image {why} (owner uid {st.st_uid}, mode "
            f"{mode:04o}): whoever can write it chooses what restart runs and "
            "as whom (trust it explicitly: --trust-image / trust=True)",
        )


# ---- record layouts ----------------------------------------------------------

_FMODE_ALL = int(sum(FMode))
_UTS = ("sysname", "release", "version", "machine")


# ---- records: one by one -----------------------------------------------------


def iter_records(data: bytes, *, packed_items: bool = False) -> Iterator[Record]:
    """Decode the records of ``data`` one at a time, each checked by itself.

    Stops at the end of ``data`` (whether or not a TAIL was seen: the grammar
    is the parser's business) and raises ImageError for anything after a
    TAIL.  Cross-record rules (ptags, counts, objrefs, checksum) are not
    checked here; ``Image.from_bytes()`` does.  ``packed_items``: EPOLL
    items stay bytes (the reader's way) instead of a list of dicts.
    """
    p = _Parser(data)  # its _next() is the one step of reading a record
    while (rec := p._next(packed_items)) is not None:
        if rec.type == HdrType.TASK:  # the record view: each string's bytes
            f = rec.fields
            for key, count in (("argv", "argc"), ("env", "envc")):
                f[key] = f[key][:-1].split(b"\0") if f[count] else []
        yield rec


_HDR_CODEC = codec(HDR)
_HDR_UNPACK = _HDR_CODEC.unpack_from
# HEAD's fields in the header Struct's tuple: (type, len, ptag, __pad)
if [leaf.path for leaf in _HDR_CODEC.leaves] != [("type",), ("len",), ("ptag",), ()]:
    raise ImportError("struct ckpt_hdr is not {type, len, ptag, pad} in ckpt.h")
_HDR_ZERO = _HDR_CODEC.zeros[0]
_TYPES = {t.value: t for t in HdrType}


def _read_obj(data: bytes, offset: int, tag: int, packed: bool = False) -> Record:
    """linux-cr's ckpt_read_obj(len, max) for the record at ``offset``.

    The exact len is enforced for records without a variable part; for the
    others len must be at most the type's bound and equal to what its fields
    declare (fixed part + variable lengths, padded).  Lengths are checked
    before anything is sliced, so a huge declared len allocates nothing.
    """
    remaining = len(data) - offset
    if remaining < HDR_SIZE:
        raise ImageError(
            offset, f"truncated record header ({remaining} of {HDR_SIZE} bytes)"
        )
    rtype, rlen, ptag, hpad = _HDR_UNPACK(data, offset)
    rt = _RT.get(rtype)
    if rt is None:
        raise ImageError(offset, f"unknown record type {rtype}")
    htype, name, lay, size, exact, decode, var, check = rt
    if hpad != _HDR_ZERO:
        raise ImageError(offset, f"{name}: non-zero padding in its header")
    if rlen != exact:
        _bad_len(offset, name, lay, rlen, remaining)
    if remaining < size:
        raise ImageError(offset, f"{name}: truncated ({remaining} of {rlen} bytes)")

    fields, pad_ok = decode(data, offset)
    end = size
    for v in var:
        n = fields[v.count]
        if n > v.max:
            raise ImageError(offset, f"{name}: {v.count} {n} exceeds {v.bound} {v.max}")
        end += n * v.item_size
    if end != rlen and pad(end) != rlen:
        raise ImageError(offset, f"{name}: len {rlen} but its fields make {pad(end)}")
    if remaining < rlen:
        raise ImageError(offset, f"{name}: truncated ({remaining} of {rlen} bytes)")
    if not pad_ok:
        raise ImageError(offset, f"{name}: non-zero padding in {lay.struct}")
    if end != rlen and any(data[offset + end : offset + rlen]):
        raise ImageError(offset, f"{name}: non-zero trailing padding")

    if var:
        pos = offset + size
        for v in var:
            vsize = fields[v.count] * v.item_size
            fields[v.name] = data[pos : pos + vsize]  # arrays: the checks decode
            pos += vsize

    rec = Record(offset, tag, htype, rlen, ptag, fields)
    check(rec, name)
    if not packed:
        for v in var:
            if v.item and v.item.startswith("struct "):  # EPOLL items: dicts
                view = ffi.from_buffer(f"{v.item}[]", fields[v.name])
                fields[v.name] = [decode_fields(v.item, it) for it in view]
    return rec


def _bad_len(offset: int, name: str, lay: Layout, rlen: int, remaining: int) -> None:
    """The len checks of a record whose len is not its fixed size (the
    usual case of a record with a variable part): ImageError if it is bad."""
    if rlen < HDR_SIZE:
        raise ImageError(offset, f"{name}: len {rlen} < header size {HDR_SIZE}")
    if rlen % ALIGN:
        raise ImageError(offset, f"{name}: len {rlen} not a multiple of {ALIGN}")
    if not lay.var and rlen != pad(lay.size):
        raise ImageError(offset, f"{name}: len {rlen}, expected {pad(lay.size)}")
    if rlen < lay.size:
        raise ImageError(
            offset, f"{name}: len {rlen} shorter than {lay.struct} ({lay.size})"
        )
    if rlen > lay.max_len:
        raise ImageError(offset, f"{name}: len {rlen} exceeds its bound {lay.max_len}")


# ---- record-local checks: values that are wrong whatever surrounds them ------


# module ABIs whose images read the same: ABI 3 (TASK_FDS, the file's
# identity in ckpt_file_info), 4 (TASK_FDS_DETAIL) and 5 changed only ioctls
_IMAGE_ABIS = (2, 3, 4, 5)
if lib.CKPT_ABI_VERSION not in _IMAGE_ABIS:
    raise ImportError(f"ckpt.h ABI {lib.CKPT_ABI_VERSION}: which images does it read?")


def _check_head(rec: Record, name: str) -> None:
    f = rec.fields
    if f["magic"] != lib.CKPT_HEAD_MAGIC:
        raise bad(rec, name, f"bad magic {f['magic']:#x}")
    if f["format_version"] == 1:
        raise bad(
            rec,
            name,
            "format version 1 is refused: its TASK records hold no credentials "
            "(uids, gids, groups, limits, executable), so a restart would run "
            "every task as root; checkpoint the tree again with this pyckpt",
        )
    if f["format_version"] == 2:
        raise bad(
            rec,
            name,
            "format version 2 is refused: its TASK records have another size "
            "and cannot say a task is a zombie or shares its fd table; "
            "checkpoint the tree again with this pyckpt",
        )
    if f["format_version"] == 3:
        raise bad(
            rec,
            name,
            "format version 3 is refused: its TASK records hold no capability "
            "sets, securebits or seccomp filters, so a restart would lift the "
            "limits a task ran under, and its CONTENTS records store a file up "
            "to its last byte without extents; checkpoint the tree again with "
            "this pyckpt",
        )
    if f["format_version"] != lib.CKPT_FORMAT_VERSION:
        raise bad(rec, name, f"unsupported format version {f['format_version']}")
    if f["abi_version"] not in _IMAGE_ABIS:
        raise bad(rec, name, f"unsupported ABI version {f['abi_version']}")
    if f["time_nsec"] >= 1_000_000_000:
        raise bad(rec, name, f"time_nsec {f['time_nsec']} >= 10^9")
    for key in _UTS:
        raw = f[key]
        nul = raw.find(b"\0")
        if nul < 0:
            raise bad(rec, name, f"{key} not NUL-terminated")
        if any(raw[nul:]):
            raise bad(rec, name, f"non-zero padding after {key}")
        f[key] = raw[:nul]


def _check_tree(rec: Record, name: str) -> None:
    if rec.fields["root_pid"] < 0:
        raise bad(rec, name, f"root_pid {rec.fields['root_pid']} < 0")


def _strings(rec: Record, name: str, key: str, count: str) -> None:
    """Checks the NULs; the strings stay packed (the parser decodes them at
    once, iter_records splits them)."""
    raw, n = rec.fields[key], rec.fields[count]
    nuls = raw.count(b"\0")
    if nuls != n or (n and not raw.endswith(b"\0")):
        raise bad(rec, name, f"{key} has {nuls} NULs for {count} {n}")


def _decode_strings(raw: bytes, n: int) -> list[str]:
    """The NUL-terminated strings of raw (checked by _strings), decoded in
    one go: no list of bytes objects beside the strs."""
    return raw[:-1].decode("utf-8", "surrogateescape").split("\0") if n else []


# a str costs ~57 bytes (object and list slot) whatever its length: beyond
# the first few, a TASK record may hold one string per _STRING_BYTES bytes
# of argv and env, so that its strings take at most ~10x its size to parse
# (a record of 2-byte strings took 23x).  Linux's own bound is the stack
# limit; real environments and argument lists average far more.
_STRINGS_FREE = 64
_STRING_BYTES = 6


_TASK_FLAGS = (
    lib.CKPT_TASK_NO_NEW_PRIVS
    | lib.CKPT_TASK_RLIMITS
    | lib.CKPT_TASK_ZOMBIE
    | lib.CKPT_TASK_AT_SECURE
    | lib.CKPT_TASK_CAPS
    | lib.CKPT_TASK_SECUREBITS
    | lib.CKPT_TASK_CWD_STAT
)
_CAP_FIELDS = (
    "cap_inheritable",
    "cap_permitted",
    "cap_effective",
    "cap_bset",
    "cap_ambient",
)
_CWD_FIELDS = ("cwd_dev", "cwd_ino", "cwd_mode", "cwd_uid", "cwd_gid")


def _check_task(rec: Record, name: str) -> None:
    f = rec.fields
    if f["pid"] <= 0:
        raise bad(rec, name, f"pid {f['pid']} <= 0")
    no_nul(rec, name, "comm", "cwd", "exe", "root", "label")
    _strings(rec, name, "argv", "argc")
    _strings(rec, name, "env", "envc")
    n, size = f["argc"] + f["envc"], f["argv_len"] + f["env_len"]
    if n > _STRINGS_FREE + size // _STRING_BYTES:
        raise bad(
            rec,
            name,
            f"{n} argv and env strings in {size} bytes: beyond the first "
            f"{_STRINGS_FREE}, at most one string per {_STRING_BYTES} bytes "
            "(so short, they would take some 20x their size to parse)",
        )
    if f["flags"] & ~_TASK_FLAGS:
        raise bad(rec, name, f"unknown flags {f['flags']:#x}")
    if f["umask"] & ~0o777:
        raise bad(rec, name, f"umask {f['umask']:#o} out of range")
    if not 1 <= f["nr_threads"] <= lib.CKPT_THREADS_MAX:
        raise bad(rec, name, f"nr_threads {f['nr_threads']} out of range")
    if f["flags"] & lib.CKPT_TASK_ZOMBIE:
        if not 0 <= f["exit_status"] <= 0xFFFF:
            raise bad(rec, name, f"exit_status {f['exit_status']:#x} out of range")
        if f["nr_fds"]:
            raise bad(rec, name, f"a zombie with {f['nr_fds']} fds")
        if f["files_pid"] != f["pid"]:
            raise bad(rec, name, "a zombie shares no fd table")
    elif f["exit_status"]:
        raise bad(rec, name, "exit_status set without CKPT_TASK_ZOMBIE")
    f["groups"] = list(ffi.from_buffer("uint32_t[]", f["groups"]))
    if not f["flags"] & lib.CKPT_TASK_RLIMITS and any(
        r["cur"] or r["max"] for r in f["rlim"]
    ):
        raise bad(rec, name, "rlim[] set without CKPT_TASK_RLIMITS")
    for i, r in enumerate(f["rlim"]):
        if r["cur"] > r["max"]:
            raise bad(rec, name, f"rlim[{i}]: soft {r['cur']} above hard {r['max']}")
    for flag, keys in (
        (lib.CKPT_TASK_CAPS, _CAP_FIELDS),
        (lib.CKPT_TASK_SECUREBITS, ("securebits",)),
        (lib.CKPT_TASK_CWD_STAT, _CWD_FIELDS),
    ):
        if not f["flags"] & flag and any(f[k] for k in keys):
            raise bad(rec, name, f"{keys[0]} set without its flag")
    if f["flags"] & lib.CKPT_TASK_CWD_STAT and not stat.S_ISDIR(f["cwd_mode"]):
        raise bad(rec, name, f"cwd_mode {f['cwd_mode']:#o} is not a directory's")
    if f["nr_seccomp"] > lib.CKPT_SECCOMP_FILTERS_MAX:
        raise bad(rec, name, f"nr_seccomp {f['nr_seccomp']} out of range")
    if f["flags"] & lib.CKPT_TASK_ZOMBIE and (f["nr_seccomp"] or f["label"]):
        raise bad(rec, name, "a zombie with seccomp filters or a label")


def _check_seccomp(rec: Record, name: str) -> None:
    n = rec.fields["nr_insns"]
    if not 1 <= n <= lib.CKPT_SECCOMP_INSNS_MAX:
        raise bad(rec, name, f"nr_insns {n} out of range")


def _check_fd(rec: Record, name: str) -> None:
    f = rec.fields
    if f["fd"] < 0:
        raise bad(rec, name, f"fd {f['fd']} < 0")
    if f["objref"] <= 0:
        raise bad(rec, name, f"objref {f['objref']} <= 0")
    if f["flags"] & ~lib.CKPT_FD_CLOEXEC:
        raise bad(rec, name, f"unknown flags {f['flags']:#x}")


# _Parser's fast paths and _write's: the FD and OBJREF records' own layouts
_FD_UNPACK = codec("struct ckpt_hdr_fd").unpack_from
_OBJREF_UNPACK = codec("struct ckpt_hdr_objref").unpack_from
_FD_PACK = packer("struct ckpt_hdr_fd")
_OBJREF_PACK = packer("struct ckpt_hdr_objref")
_FD_SIZE = ffi.sizeof("struct ckpt_hdr_fd")
_OBJREF_SIZE = ffi.sizeof("struct ckpt_hdr_objref")
_T_FD, _T_OBJREF, _T_ERROR = HdrType.FD.value, HdrType.OBJREF.value, HdrType.ERROR.value
_T_FILE = ObjType.FILE.value
_PAD4 = bytes(4)


_FILE_FLAGS_KNOWN = lib.CKPT_FILE_EXTERNAL | sum(kinds.FILE_FLAG_NAMES)


def _check_file(rec: Record, name: str) -> None:
    f = rec.fields
    if f["objref"] <= 0:
        raise bad(rec, name, f"objref {f['objref']} <= 0")
    if f["kind"] not in FileKind._value2member_map_:
        raise bad(rec, name, f"kind {f['kind']} out of range")
    if f["f_mode"] & ~_FMODE_ALL:
        raise bad(rec, name, f"f_mode {f['f_mode']:#x} out of range")
    if f["flags"] & ~_FILE_FLAGS_KNOWN:
        raise bad(rec, name, f"unknown flags {f['flags']:#x}")
    # a kind's own flag bits (kinds.base.Kind.file_flags) on its files only
    other = f["flags"] & ~(lib.CKPT_FILE_EXTERNAL | kinds.FILE_FLAGS.get(f["kind"], 0))
    if other:
        flag = kinds.FILE_FLAG_NAMES[other & -other]
        raise bad(rec, name, f"{flag} on a {FileKind(f['kind']).name} file")
    if f["kind"] in kinds.ENDS and f["pipe_objref"] <= 0:
        raise bad(rec, name, f"pipe_objref {f['pipe_objref']} <= 0 on a pipe end")
    if f["kind"] not in kinds.ENDS and f["pipe_objref"]:
        kind = FileKind(f["kind"]).name
        raise bad(rec, name, f"pipe_objref {f['pipe_objref']} on a {kind} file")
    no_nul(rec, name, "path")


def _check_objref(rec: Record, name: str) -> None:
    f = rec.fields
    if f["objref"] <= 0:
        raise bad(rec, name, f"objref {f['objref']} <= 0")
    if f["type"] != ObjType.FILE:
        raise bad(rec, name, f"type {f['type']} is not CKPT_OBJ_FILE")


def _check_error(rec: Record, name: str) -> None:
    f = rec.fields
    if f["err"] > 0:
        raise bad(rec, name, f"err {f['err']} > 0 (a negative errno or 0)")
    if f["objref"] < 0 or f["pid"] < 0 or f["fd"] < -1:
        raise bad(rec, name, "negative objref, pid or fd")
    no_nul(rec, name, "msg")


def _check_tail(rec: Record, name: str) -> None:
    if rec.fields["magic"] != lib.CKPT_TAIL_MAGIC:
        raise bad(rec, name, f"bad magic {rec.fields['magic']:#x}")


_CORE: dict[HdrType, tuple[Layout, Any]] = {
    HdrType.HEAD: (Layout("struct ckpt_hdr_head"), _check_head),
    HdrType.TREE: (Layout("struct ckpt_hdr_tree"), _check_tree),
    HdrType.TASK: (
        Layout(
            "struct ckpt_hdr_task",
            (
                Var("comm", "comm_len", "CKPT_COMM_MAX"),
                Var("argv", "argv_len", "CKPT_ARGV_MAX"),
                Var("cwd", "cwd_len", "CKPT_PATH_MAX"),
                Var("groups", "ngroups", "CKPT_GROUPS_MAX", "uint32_t"),
                Var("env", "env_len", "CKPT_ENV_MAX"),
                Var("exe", "exe_len", "CKPT_PATH_MAX"),
                Var("root", "root_len", "CKPT_PATH_MAX"),
                Var("label", "label_len", "CKPT_LABEL_MAX"),
            ),
        ),
        _check_task,
    ),
    HdrType.SECCOMP: (
        Layout(
            "struct ckpt_hdr_seccomp",
            (Var("insns", "nr_insns", "CKPT_SECCOMP_INSNS_MAX", "uint64_t"),),
        ),
        _check_seccomp,
    ),
    HdrType.FD: (Layout("struct ckpt_hdr_fd"), _check_fd),
    HdrType.FILE: (
        Layout("struct ckpt_hdr_file", (Var("path", "path_len", "CKPT_PATH_MAX"),)),
        _check_file,
    ),
    HdrType.OBJREF: (Layout("struct ckpt_hdr_objref"), _check_objref),
    HdrType.ERROR: (
        Layout("struct ckpt_hdr_error", (Var("msg", "msg_len", "CKPT_MSG_MAX"),)),
        _check_error,
    ),
    HdrType.TAIL: (Layout("struct ckpt_hdr_tail"), _check_tail),
}
for _t, (_layout, _check) in _CORE.items():
    register(_t, _layout, _check)
# a record type added to ckpt.h must get a layout (here or in its kind)
if set(LAYOUTS) != set(HdrType):
    _missing = ", ".join(HdrType(t).name for t in set(HdrType) - set(LAYOUTS))
    raise ImportError(f"ckpt.h record types without a layout: {_missing}")

# per record type, what _read_obj needs, looked up once: (type, its name in
# messages, layout, fixed size, the len that needs no more checks -- the
# padded size of a record without variable part, -1 otherwise -- decoder,
# variable parts, record check)
_RT: dict[int, tuple[Any, ...]] = {
    int(t): (
        HdrType(t),
        f"{HdrType(t).name} record",
        lay,
        lay.size,
        -1 if lay.var else pad(lay.size),
        lay.codec.decode,
        lay.var,
        CHECKS[t],
    )
    for t, lay in LAYOUTS.items()
}


# record types whose data counts against a restart limit: the kind's
# (Kind.limit), for each of its records with a data_len
_COUNTED: dict[int, tuple[str, str]] = {
    int(rtype): k.limit
    for k in kinds.KINDS
    if k.limit is not None
    for rtype, lay, _ in k.records
    if any(v.count == "data_len" for v in lay.var)
}


# ---- the reader: the grammar and what spans records ---------------------------


_FD = (HdrType.FD,)
_FILE_KINDS: dict[int, FileKind] = dict(FileKind._value2member_map_)  # type: ignore[arg-type]


@functools.cache
def _fmode(value: int) -> FMode:
    """FMode(value), made once per value (an image has three or four)."""
    return FMode(value)


_FILE_OR_OBJREF = (HdrType.FILE, HdrType.OBJREF)


def _names(types: tuple[HdrType, ...]) -> str:
    return " or ".join(t.name for t in types)


@dataclass
class _Def:
    """Where an objref was defined: its FILE, or a kind's record (PIPE)."""

    what: str  # "file", or the kind's object ("pipe")
    rec: Record
    trailer_at: int | None = None  # offset of its trailer (EPOLL), once seen


class _Parser:
    """HEAD TREE {TASK {FD (FILE {kind record} | OBJREF)}} {trailer} TAIL,
    ERROR anywhere; what follows a FILE and the trailers are its kind's
    (pyckpt/kinds/), read through read/peek/ptag/define."""

    def __init__(self, data: bytes, limits: Limits | None = None) -> None:
        self.data = data
        self.limits = limits
        # restart's limits, counted as records arrive (Limits field -> so far)
        self.counts: dict[str, int] = {}
        # record types whose data_len counts against a kind's limit
        self.counted = _COUNTED if limits is not None else {}
        # iter_records()'s state, kept here: _fd's fast path moves it too
        self.offset, self.tag, self.past_tail = 0, 1, False
        self.peeked: Record | None = None
        self.image: model.Image | None = None
        self.defs: dict[int, _Def] = {}
        self.errors: list[ErrorRecord] = []

    def _pull(self) -> Record | None:
        """The next record, ERROR records taken into ``errors`` on the way."""
        if self.peeked is not None:
            rec, self.peeked = self.peeked, None
            return rec
        while (rec := self._next()) is not None:
            if rec.type != HdrType.ERROR:
                return rec
            self._top(rec)
            f = rec.fields
            self.errors.append(
                ErrorRecord(f["err"], text(f["msg"]), f["objref"], f["pid"], f["fd"])
            )
        return None

    def _next(self, packed: bool = True) -> Record | None:
        """The record at the offset, checked by itself; None at the end of
        the data, ImageError for anything after a TAIL."""
        data, at = self.data, self.offset
        if at >= len(data):
            return None
        if self.past_tail:
            raise ImageError(at, f"{len(data) - at} bytes after the TAIL record")
        rec = _read_obj(data, at, self.tag, packed)
        self.offset, self.tag = rec.end, self.tag + 1
        self.past_tail = rec.type == HdrType.TAIL
        if rec.type in self.counted:
            field, what = self.counted[rec.type]
            self._count(rec, field, rec.fields["data_len"], what)
        return rec

    def _count(self, rec: Record, field: str, n: int, what: str) -> None:
        """Add n to a limit's count: ImageError (E2BIG) at the record that
        crosses it."""
        if self.limits is None:
            return
        total = self.counts.get(field, 0) + n
        self.counts[field] = total
        top = getattr(self.limits, field)
        if total > top:
            flag = "--max-" + field.replace("_", "-")
            raise ImageError(
                rec.offset,
                f"{rec.type.name} record: {total} {what}, above the limit of "
                f"{top} ({flag} / Limits raise it)",
                _errno.E2BIG,
            )

    def _plain_next(self) -> bool:
        """A glance at the next header: whether it is one no kind owns and
        not an ERROR to skip (an FD, a TASK), left unread for _fd's fast
        path; False means: peek it."""
        if self.peeked is not None or len(self.data) - self.offset < HDR_SIZE:
            return False
        t = _HDR_UNPACK(self.data, self.offset)[0]
        return t != _T_ERROR and kinds.by_record(t) is None

    def _fd_fast(self, task: Record) -> tuple[int, int, int, int, int] | None:
        """The FD record at the offset, read in one unpack when it is
        exactly as the checks want it: (fd, objref, flags, offset, tag).
        None, with nothing read, for anything else (an ERROR, a bad field:
        the record is then read and checked as any other, which says what
        is wrong)."""
        data, at = self.data, self.offset
        if self.peeked is not None or len(data) - at < _FD_SIZE:
            return None
        t, n, ptag, pad, fd, objref, flags, pad2 = _FD_UNPACK(data, at)
        if (
            t != _T_FD
            or n != _FD_SIZE
            or ptag != task.tag
            or fd < 0
            or objref <= 0
            or flags & ~lib.CKPT_FD_CLOEXEC
            or pad != _PAD4
            or pad2 != _PAD4
        ):
            return None
        tag = self.tag
        self.offset, self.tag = at + _FD_SIZE, tag + 1
        return fd, objref, flags, at, tag

    def _objref_fast(self, objref: int, ptag: int) -> bool:
        """The OBJREF of an fd whose file an earlier one defined (most fds
        of a tree), read in one unpack when it is exactly as due: whether
        it was (else nothing is read)."""
        data, at = self.data, self.offset
        if len(data) - at < _OBJREF_SIZE:
            return False
        t, n, p, pad, ref, otype = _OBJREF_UNPACK(data, at)
        known = self.defs.get(objref)
        if (
            t != _T_OBJREF
            or n != _OBJREF_SIZE
            or p != ptag
            or ref != objref
            or otype != _T_FILE
            or pad != _PAD4
            or known is None
            or known.what != "file"
        ):
            return False
        self.offset, self.tag = at + _OBJREF_SIZE, self.tag + 1
        return True

    def _peek(self) -> Record | None:
        if self.peeked is None:
            self.peeked = self._pull()
        return self.peeked

    def _read(
        self, expected: tuple[HdrType, ...], why: str | Callable[[], str] = ""
    ) -> Record:
        """The next record, one of ``expected``; ``why`` (or a function
        making it, only called on an error) says why it is due."""
        rec = self._pull()
        if rec is not None and rec.type in expected:
            return rec
        what = _names(expected) + " record"
        if callable(why):
            why = why()
        why = f" ({why})" if why else ""
        if rec is None:
            raise ImageError(
                len(self.data), f"image truncated: ends where {what} is due{why}"
            )
        raise ImageError(rec.offset, f"{rec.type.name} record where {what} is due{why}")

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
        first = self._next()
        if first is None:
            raise ImageError(0, "image truncated: ends where HEAD record is due")
        if first.type != HdrType.HEAD:
            raise ImageError(0, f"{first.type.name} record where HEAD record is due")
        self._top(first)
        image = Image(head=self._head(first))
        tree = self._read((HdrType.TREE,))
        self._top(tree)
        nr_tasks, root_pid = tree.fields["nr_tasks"], tree.fields["root_pid"]
        self._count(tree, "tasks", nr_tasks, "tasks")
        if nr_tasks == 0 and root_pid != 0:
            raise ImageError(tree.offset, f"TREE record: root_pid {root_pid}, no tasks")
        pids: set[int] = set()
        for i in range(nr_tasks):
            image.tasks.append(self._task(image, tree, i, pids))
        after = (*sorted(kinds.TRAILERS), HdrType.TAIL)
        while True:
            rec = self._read(after, "after the last task")
            if rec.type == HdrType.TAIL:
                break
            kind = kinds.by_record(rec.type)
            assert kind is not None  # TRAILERS are owned
            kind.read_trailer(self, image, rec)
        self._tail(rec)
        for k in kinds.KINDS:
            k.check_image(image)
        image.errors = self.errors
        return image

    # what a kind reads its records with
    def read(self, expected: tuple[HdrType, ...], why: str = "") -> Record:
        return self._read(expected, why)

    def peek(self) -> Record | None:
        return self._peek()

    def ptag(self, rec: Record, ptag: int, parent: str) -> None:
        self._ptag(rec, ptag, parent)

    def child(self, file: Record, rtype: HdrType, why: str = "") -> Record:
        """The rtype record a kind writes right after its FILE: read, its
        ptag and objref checked against that FILE."""
        rec = self._read((rtype,), why)
        self._ptag(rec, file.tag, "its FILE")
        objref, mine = rec.fields["objref"], file.fields["objref"]
        if objref != mine:
            raise ImageError(
                rec.offset,
                f"{rtype.name} record: objref {objref} differs from its FILE's {mine}",
            )
        return rec

    def define(self, objref: int, what: str, rec: Record) -> None:
        """A kind's record defines objref (a pipe): FILEs may not reuse it."""
        self.defs[objref] = _Def(what, rec)

    def _head(self, rec: Record) -> Head:
        f = rec.fields
        return Head(
            time=f["time_sec"] + f["time_nsec"] / 1e9,
            sysname=text(f["sysname"]),
            release=text(f["release"]),
            version=text(f["version"]),
            machine=text(f["machine"]),
            format_version=f["format_version"],
            abi_version=f["abi_version"],
        )

    def _task(self, image: model.Image, tree: Record, i: int, pids: set[int]) -> Task:
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
        self._count(rec, "fds", f["nr_fds"], "fds in all")
        self._count(rec, "strings", f["argc"] + f["envc"], "argv and env strings")
        self._count(rec, "groups", f["ngroups"], "supplementary groups")
        task = Task(
            pid=pid,
            ppid=ppid,
            sid=f["sid"],
            pgid=f["pgid"],
            comm=text(f["comm"]),
            argv=_decode_strings(f["argv"], f["argc"]),
            cwd=text(f["cwd"]),
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
            env=_decode_strings(f["env"], f["envc"]),
            exe=text(f["exe"]),
            root=text(f["root"]),
            exit_status=f["exit_status"] if f["flags"] & lib.CKPT_TASK_ZOMBIE else None,
            files_pid=0 if files_pid == pid else files_pid,
            nr_threads=f["nr_threads"],
            at_secure=bool(f["flags"] & lib.CKPT_TASK_AT_SECURE),
            label=text(f["label"]),
        )
        if f["flags"] & lib.CKPT_TASK_CAPS:
            for key in _CAP_FIELDS:
                setattr(task, key, f[key])
        if f["flags"] & lib.CKPT_TASK_SECUREBITS:
            task.securebits = f["securebits"]
        if f["flags"] & lib.CKPT_TASK_CWD_STAT:
            for key in _CWD_FIELDS:
                setattr(task, key, f[key])
        for j in range(f["nr_seccomp"]):
            sec = self._read(
                (HdrType.SECCOMP,),
                f"TASK {pid} declared {f['nr_seccomp']} seccomp filters, this is "
                f"#{j + 1}",
            )
            self._ptag(sec, rec.tag, "its TASK")
            task.seccomp.append(bytes(sec.fields["insns"]))
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
            if fd_table(owner.fds) != fd_table(task.fds):
                raise ImageError(
                    rec.offset,
                    f"TASK record: shares the fd table of task {owner.pid} "
                    "but lists other fds",
                )
        return task

    def _fd(self, image: model.Image, task: Record, j: int) -> tuple[Fd, int]:
        """One FD and the FILE (+PIPE) or OBJREF after it; its offset too."""
        head = self._fd_fast(task)
        if head is None:
            nr = task.fields["nr_fds"]
            rec = self._read(
                _FD,
                lambda: (
                    f"TASK {task.fields['pid']} declared {nr} fds, this is #{j + 1}"
                ),
            )
            self._ptag(rec, task.tag, "its TASK")
            f = rec.fields
            head = f["fd"], f["objref"], f["flags"], rec.offset, rec.tag
        fd, objref, flags, at, tag = head
        fd_obj = Fd(fd, objref, bool(flags & lib.CKPT_FD_CLOEXEC))
        if self._objref_fast(objref, tag):
            return fd_obj, at
        nxt = self._read(_FILE_OR_OBJREF, "after an FD")
        self._ptag(nxt, tag, "its FD")
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
            raise ImageError(at, f"FD record: objref {objref} names nothing yet")
        elif known.what != "file":
            raise ImageError(at, f"FD record: objref {objref} names a {known.what}")
        return fd_obj, at

    def _file(self, image: model.Image, rec: Record) -> None:
        f = rec.fields
        self.defs[f["objref"]] = _Def("file", rec)
        kind = _FILE_KINDS[f["kind"]]  # _check_file: a member's value
        file = File(
            objref=f["objref"],
            kind=kind,
            f_flags=f["f_flags"],
            f_mode=_fmode(f["f_mode"]),
            pos=f["pos"],
            path=text(f["path"]),
            pipe_objref=f["pipe_objref"],
            external=bool(f["flags"] & lib.CKPT_FILE_EXTERNAL),
            st_dev=f["st_dev"],
            st_ino=f["st_ino"],
            st_mode=f["st_mode"],
            st_uid=f["st_uid"],
            st_gid=f["st_gid"],
            st_size=f["st_size"],
            st_rdev=f["st_rdev"],
        )
        image.files[file.objref] = file
        owner = kinds.by_file_kind(kind)
        if owner is not None:
            owner.read_file(self, image, file, rec)
        if self._plain_next():
            return
        nxt = self._peek()
        other = kinds.by_record(nxt.type) if nxt is not None else None
        if nxt is not None and other is not None and nxt.type not in kinds.TRAILERS:
            why = (
                f"its {other.name} is already defined"
                if other is owner
                else f"not a {other.name}"
            )
            raise ImageError(nxt.offset, f"{nxt.type.name} record after a FILE: {why}")

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


def _check_model(image: model.Image) -> None:
    """What the writer cannot express: objects nothing references, references
    to nothing, mismatched keys; then, on the model, what the reader would
    refuse in the records written for it (see ``_write``)."""
    for key, f in image.files.items():
        if key != f.objref:
            raise ValueError(f"Image.files[{key}] has objref {f.objref}")
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
    for k in kinds.KINDS:
        k.check_model(image)
    _check_tree_model(image)
    for f in image.files.values():
        _check_file_model(f)


def _invalid(what: str) -> ValueError:
    return ValueError(f"the model does not make a valid image: {what}")


def _check_tree_model(image: model.Image) -> None:
    """The reader's TASK and FD rules that span records, and the FD records'
    own checks (TASK records are checked record by record as written)."""
    pids: set[int] = set()
    tables: dict[int, Task] = {}
    for i, t in enumerate(image.tasks):
        pid = t.pid
        if pid in pids:
            raise _invalid(f"TASK record: pid {pid} twice")
        if i > 0 and t.ppid not in pids:
            raise _invalid(f"TASK record: ppid {t.ppid} is not an earlier task's pid")
        files_pid = t.files_pid or pid
        if files_pid != pid and files_pid not in pids:
            raise _invalid(
                f"TASK record: files_pid {files_pid} is neither its pid nor an "
                "earlier task's"
            )
        pids.add(pid)
        numbers: set[int] = set()
        for fd in t.fds:
            if fd.fd < 0:
                raise _invalid(f"FD record: fd {fd.fd} < 0")
            if fd.objref <= 0:
                raise _invalid(f"FD record: objref {fd.objref} <= 0")
            if fd.fd in numbers:
                raise _invalid(f"FD record: fd {fd.fd} twice")
            numbers.add(fd.fd)
        if t.files_pid and files_pid != pid:
            owner = tables[files_pid]
            if owner.files_pid or owner.exit_status is not None:
                raise _invalid(
                    f"TASK record: files_pid {t.files_pid} is not a live task "
                    "with a table of its own"
                )
            if fd_table(owner.fds) != fd_table(t.fds):
                raise _invalid(
                    f"TASK record: shares the fd table of task {owner.pid} "
                    "but lists other fds"
                )
        tables[pid] = t


def _check_file_model(f: File) -> None:
    """_check_file() on the FILE record that f makes (its flags are built
    from booleans, so only the values given as numbers can be wrong)."""
    name = "FILE record"
    if f.objref <= 0:
        raise _invalid(f"{name}: objref {f.objref} <= 0")
    kind = f.kind
    if kind not in FileKind._value2member_map_:
        raise _invalid(f"{name}: kind {kind} out of range")
    if isinstance(f.f_mode, int) and int(f.f_mode) & ~_FMODE_ALL:
        raise _invalid(f"{name}: f_mode {f.f_mode:#x} out of range")
    if kind in kinds.ENDS and isinstance(f.pipe_objref, int) and f.pipe_objref <= 0:
        raise _invalid(f"{name}: pipe_objref {f.pipe_objref} <= 0 on a pipe end")
    if kind not in kinds.ENDS and f.pipe_objref:
        raise _invalid(
            f"{name}: pipe_objref {f.pipe_objref} on a {FileKind(kind).name} file"
        )
    if isinstance(f.path, str) and "\0" in f.path:
        raise _invalid(f"{name}: NUL inside path")


# records the model check covers (the bulk of an image): the writer checks
# every other record by itself as it writes it (HEAD, TASK, ERROR, a kind's)
_MODEL_CHECKED = frozenset({HdrType.FD, HdrType.OBJREF, HdrType.FILE})


class _Writer:
    """The records so far; what a kind writes its records with."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.file_tags: dict[int, int] = {}  # objref -> tag of its FILE
        self.defined: set[int] = set()  # objrefs a kind's record defined

    def add(
        self,
        rtype: HdrType,
        ptag: int,
        fields: dict[str, Any],
        var: dict[str, Any] | None = None,
    ) -> int:
        """Append one record; its tag."""
        raw = pack(rtype, ptag, fields, var)
        self.out.append(raw)
        if rtype not in _MODEL_CHECKED:
            # the reader's record check on this one record (linux-cr's
            # ckpt_read_obj and the type's check), without the image around it
            try:
                _read_obj(raw, 0, len(self.out), True)
            except ImageError as e:
                raise _invalid(e.msg) from None
        return len(self.out)


def _needs_reparse(image: model.Image) -> bool:
    """Whether some kind in the image reads its records with checks that
    span records beyond what its check_model() mirrors (``Kind.reparse``):
    then the written image is parsed again, as it always was."""
    owners = {kinds.by_file_kind(k) for k in {f.kind for f in image.files.values()}}
    # a kind's state (an accessor leaves an empty one behind: not a state)
    owners.update(kinds.by_name(n) for n, state in image.extra.items() if state)
    return any(k is not None and k.reparse for k in owners)


def _write(image: model.Image, reparse: bool | None = None) -> bytes:
    """The image's bytes.  The model is checked before anything is written
    (``_check_model``, and each record not covered there as it is packed);
    ``reparse`` (default: only for kinds the model check does not cover)
    also parses the result, the way every image used to be checked."""
    _check_model(image)
    w = _Writer()
    add, out = w.add, w.out

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
        | {key: enc(getattr(h, key), f"HEAD {key}") for key in _UTS},
    )
    tasks = image.tasks
    tree = add(
        HdrType.TREE,
        0,
        {"nr_tasks": len(tasks), "root_pid": tasks[0].pid if tasks else 0},
    )
    file_tags = w.file_tags
    for t in tasks:
        argv = b"".join(enc(a, f"task {t.pid} argv") + b"\0" for a in t.argv)
        env = b"".join(enc(e, f"task {t.pid} env") + b"\0" for e in t.env)
        flags = lib.CKPT_TASK_NO_NEW_PRIVS if t.no_new_privs else 0
        if t.exit_status is not None:
            flags |= lib.CKPT_TASK_ZOMBIE
        if t.at_secure:
            flags |= lib.CKPT_TASK_AT_SECURE
        sec: dict[str, int] = dict.fromkeys((*_CAP_FIELDS, *_CWD_FIELDS), 0)
        if t.cap_bset is not None:
            flags |= lib.CKPT_TASK_CAPS
            sec |= {k: getattr(t, k) for k in _CAP_FIELDS}
        elif t.cap_inheritable or t.cap_ambient or t.cap_permitted or t.cap_effective:
            raise ValueError(f"task {t.pid}: capability sets without cap_bset")
        if t.securebits is not None:
            flags |= lib.CKPT_TASK_SECUREBITS
        if t.cwd_mode:
            flags |= lib.CKPT_TASK_CWD_STAT
            sec |= {k: getattr(t, k) for k in _CWD_FIELDS}
        for insns in t.seccomp:
            if not insns or len(insns) % 8:
                raise ValueError(
                    f"task {t.pid}: a seccomp filter of {len(insns)} bytes"
                )
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
                "securebits": t.securebits or 0,
                "nr_seccomp": len(t.seccomp),
                **sec,
            },
            {
                "comm": enc(t.comm, f"task {t.pid} comm"),
                "argv": argv,
                "cwd": enc(t.cwd, f"task {t.pid} cwd"),
                "groups": list(t.groups),
                "env": env,
                "exe": enc(t.exe, f"task {t.pid} exe"),
                "root": enc(t.root, f"task {t.pid} root"),
                "label": enc(t.label, f"task {t.pid} label"),
            },
        )
        for insns in t.seccomp:
            add(HdrType.SECCOMP, task, {}, {"insns": insns})
        for fd in t.fds:
            flags = lib.CKPT_FD_CLOEXEC if fd.cloexec else 0
            # the model check covered FD and OBJREF: packed as they are, and
            # only a value out of its field's range goes through add()
            raw = _FD_PACK(_T_FD, _FD_SIZE, task, _PAD4, fd.fd, fd.objref, flags, _PAD4)
            if raw is None:
                fdtag = add(
                    HdrType.FD, task, {"fd": fd.fd, "objref": fd.objref, "flags": flags}
                )
            else:
                out.append(raw)
                fdtag = len(out)
            if fd.objref in file_tags:
                # objref fitted in the FD record: it fits here too
                out.append(
                    _OBJREF_PACK(
                        _T_OBJREF, _OBJREF_SIZE, fdtag, _PAD4, fd.objref, _T_FILE
                    )
                )
                continue
            f = image.files[fd.objref]
            owner = kinds.by_file_kind(f.kind)
            fields = {
                "objref": f.objref,
                "kind": f.kind,
                "f_flags": f.f_flags,
                "f_mode": f.f_mode,
                "pos": f.pos,
                "pipe_objref": f.pipe_objref,
                "flags": lib.CKPT_FILE_EXTERNAL if f.external else 0,
                "st_dev": f.st_dev,
                "st_ino": f.st_ino,
                "st_mode": f.st_mode,
                "st_uid": f.st_uid,
                "st_gid": f.st_gid,
                "st_size": f.st_size,
                "st_rdev": f.st_rdev,
            }
            if owner is not None:
                own = owner.file_fields(f)
                if own:  # the kind's fields, its flag bits beside EXTERNAL
                    flags = fields["flags"] | own.pop("flags", 0)
                    fields.update(own, flags=flags)
            file_tags[f.objref] = add(
                HdrType.FILE,
                fdtag,
                fields,
                {"path": enc(f.path, f"file {f.objref} path")},
            )
            if owner is not None:
                owner.write_file(w, image, f, file_tags[f.objref])
    for k in kinds.KINDS:
        k.write_trailers(w, image)
    for e in image.errors:
        add(
            HdrType.ERROR,
            0,
            {"err": e.err, "objref": e.objref, "pid": e.pid, "fd": e.fd},
            {"msg": enc(e.msg, "error msg")},
        )
    body = b"".join(w.out)
    tail = {
        "magic": lib.CKPT_TAIL_MAGIC,
        "nr_records": len(w.out) + 1,
        "checksum": zlib.crc32(body),
    }
    data = body + pack(HdrType.TAIL, 0, tail)
    if reparse is None:
        reparse = _needs_reparse(image)
    if reparse:
        # never hand out an image the reader refuses (NULs, bounds, pid order)
        try:
            _Parser(data).parse()
        except ImageError as e:
            raise _invalid(str(e)) from None
    return data
