"""memfd and deleted regular files: their contents go into the image.

A memfd (/proc link ``/memfd:NAME (deleted)`` on tmpfs or hugetlbfs) and a
regular file whose last name was removed (``st_nlink == 0``) can be
reopened by no path: checkpoint reads what they hold through the
coordinator's copy with pread(2) (the file offset, shared with the tree,
does not move), up to a limit per file (Options.contents_limit, CLI
``--max-file-contents``): only its data extents (SEEK_DATA/SEEK_HOLE), so a
sparse file costs what it holds, not its length.
Restart makes an unlinked file again, in a helper with the rights of its
first holder (``Objects.as_holder``): memfd_create() with the same name
(MFD_ALLOW_SEALING when it had seals), or an O_TMPFILE (else a named file
unlinked at once) in the directory the file was deleted from; sets the
size, writes each extent at its offset (the rest stays a hole), sets mode
and owner, and only then adds the seals.  Several
open files on one inode (a memfd reopened through /proc/PID/fd) share it
again: the first one is made, the others reopened through
/proc/self/fd/N with their own flags.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import functools
import os
import stat
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from pyckpt import syscalls
from pyckpt.abi import FileKind, HdrType, lib
from pyckpt.device import FileInfo
from pyckpt.errors import ImageError, RestartError
from pyckpt.kinds.base import (
    Collector,
    FdRef,
    Kind,
    Objects,
    Plan,
    Reader,
    Writer,
    by_holder,
    extra,
)
from pyckpt.kinds.regular import SETFL
from pyckpt.model import File, Image
from pyckpt.records import Layout, Record, Var, bad

F_ADD_SEALS = 1033
F_GET_SEALS = 1034
F_SEAL_SEAL = 0x1
SEALS = 0x3F  # F_SEAL_SEAL .. F_SEAL_EXEC (6.3+)
MFD_NAME_MAX = 249
TMPFS_MAGIC = 0x01021994
HUGETLBFS_MAGIC = 0x958458F6
DEFAULT_LIMIT = 1 << 20
_DELETED = " (deleted)"
_MEMFD = "/memfd:"
_CHUNK = 1 << 20


@dataclass
class Contents:
    """CONTENTS record: what a MEMFD or DELETED file holds."""

    data: bytes = b""  # the extents' bytes, one after the other
    seals: int = 0  # MEMFD: F_GET_SEALS
    same_as: int = 0  # objref of an earlier file on the same inode (no data)
    # (offset, len) of each run of data, in order; the rest is a hole.
    # Data given without extents is the file's first bytes
    extents: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.data and not self.extents:
            self.extents = [(0, len(self.data))]


def contents_bytes(f: File) -> int:
    """The data bytes a file's state holds (0 for other kinds)."""
    c = f.extra
    return len(c.data) if isinstance(c, Contents) else 0


class TooBig(Exception):
    """The file holds more than the limit allows."""


def memfd_name(link: str) -> str | None:
    """The name of a memfd from its /proc fd link, None if not a memfd's."""
    if link.startswith(_MEMFD) and link.endswith(_DELETED):
        return link[len(_MEMFD) : -len(_DELETED)]
    return None


def deleted_path(link: str) -> str:
    """Where a deleted file was: its link without " (deleted)"."""
    return link.removesuffix(_DELETED)


def fs_type(fd: int) -> int:
    """statfs(2)'s f_type of the file's filesystem."""
    return syscalls.fstatfs_type(fd)


def is_memfd(link: str, st: os.stat_result, fd: int) -> bool:
    """A memfd: the link says so, it has no name left and lives on tmpfs
    (or hugetlbfs), never a deleted file that happened to be called so."""
    return (
        memfd_name(link) is not None
        and st.st_nlink == 0
        and stat.S_ISREG(st.st_mode)
        and fs_type(fd) in (TMPFS_MAGIC, HUGETLBFS_MAGIC)
    )


def is_deleted(link: str, st: FileInfo | os.stat_result) -> bool:
    """A regular file no name leads to any more."""
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 0 and link.endswith(_DELETED)


def get_seals(fd: int) -> int:
    try:
        return fcntl.fcntl(fd, F_GET_SEALS)
    except OSError as e:
        if e.errno == _errno.EINVAL:  # a file that cannot have seals
            return 0
        raise


def _private(fd: int) -> int | None:
    """Our own open file on fd's inode (read-only), None if it cannot be."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def data_extents(own: int, size: int) -> list[tuple[int, int]]:
    """(offset, len) of each run of data below ``size`` (SEEK_DATA and
    SEEK_HOLE); the whole file as one extent where they are not supported.

    They move an offset, so ``own`` must be a private open file of the
    inode (/proc/self/fd/N), never the tree's."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(own, pos, os.SEEK_DATA)
            if start >= size:
                break
            end = min(os.lseek(own, start, os.SEEK_HOLE), size)
        except OSError as e:
            if e.errno == _errno.ENXIO:  # only a hole from pos on
                break
            return [(0, size)]
        if end <= start:
            return [(0, size)]  # a filesystem that makes no sense: all of it
        out.append((start, end - start))
        pos = end
    return out


def read_contents(
    fd: int,
    size: int,
    limit: int,
    take: Callable[[int], None] | None = None,
) -> tuple[bytes, list[tuple[int, int]]]:
    """The file's data extents and their bytes, read with pread(2) through
    the coordinator's copy ``fd`` (the offset it shares with the tree does
    not move; a write-only file is read through a private read-only open
    file); TooBig when more than ``limit`` bytes or more than
    CKPT_CONTENTS_EXTENTS_MAX extents would be stored.  ``take(n)`` is told
    of each chunk before it is read (checkpoint's byte budget: it raises
    to stop)."""
    own = _private(fd)
    try:
        extents = [(0, size)] if own is None else data_extents(own, size)
        stored = sum(n for _, n in extents)
        if stored > limit:
            raise TooBig(
                f"{size} bytes ({stored} to store), above the limit of {limit}"
            )
        if len(extents) > lib.CKPT_CONTENTS_EXTENTS_MAX:
            raise TooBig(
                f"{len(extents)} runs of data, above the image's bound of "
                f"{lib.CKPT_CONTENTS_EXTENTS_MAX} (CKPT_CONTENTS_EXTENTS_MAX)"
            )
        src = fd
        if own is not None:
            acc = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
            if acc == os.O_WRONLY:
                src = own
        chunks: list[bytes] = []
        kept: list[tuple[int, int]] = []
        for off, n in extents:
            got = 0
            while got < n:
                want = min(_CHUNK, n - got)
                if take is not None:
                    take(want)
                chunk = os.pread(src, want, off + got)
                if not chunk:
                    break  # truncated meanwhile (by a holder outside the tree)
                chunks.append(chunk)
                got += len(chunk)
            if got:
                kept.append((off, got))
            if got < n:
                break
        return b"".join(chunks), kept
    finally:
        if own is not None:
            os.close(own)


def save(
    fd: int,
    st: os.stat_result,
    limit: int,
    memfd: bool,
    take: Callable[[int], None] | None = None,
) -> Contents:
    data, extents = read_contents(fd, st.st_size, limit, take)
    return Contents(data=data, seals=get_seals(fd) if memfd else 0, extents=extents)


def _fill(fd: int, c: Contents, st_mode: int, size: int, uid: int, gid: int) -> None:
    """Size first, then each extent at its offset: what lies between them
    was a hole and stays one (no page of zeros allocated)."""
    os.ftruncate(fd, size)
    view = memoryview(c.data)
    at = 0
    for off, n in c.extents:
        done = 0
        while done < n:
            piece = view[at + done : at + min(n, done + _CHUNK)]
            done += os.pwrite(fd, piece, off + done)
        at += n
    os.fchmod(fd, stat.S_IMODE(st_mode))
    with contextlib.suppress(PermissionError):  # unprivileged: keep ours
        if (os.fstat(fd).st_uid, os.fstat(fd).st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)


def make_memfd(
    name: str, c: Contents, st_mode: int, size: int, uid: int, gid: int
) -> int:
    """A new memfd (O_RDWR, close-on-exec) holding c, sealed as it was."""
    # without MFD_ALLOW_SEALING a memfd reports F_SEAL_SEAL and nothing else
    sealing = c.seals != F_SEAL_SEAL
    flags = os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if sealing else 0)
    fd = os.memfd_create(name, flags)
    try:
        _fill(fd, c, st_mode, size, uid, gid)
        if sealing and c.seals:
            fcntl.fcntl(fd, F_ADD_SEALS, c.seals)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create_unlinked(path: str) -> int:
    """An unlinked regular file made in path's directory, under path's own
    name when it is free (its /proc link then reads as the original's:
    "PATH (deleted)"), else as an O_TMPFILE, else a fresh name."""
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        # O_EXCL | O_NOFOLLOW: never an existing file, never through a link
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            # unlink only what we made (the directory may not be ours alone)
            if os.lstat(path).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
        except FileNotFoundError:
            pass
        if os.fstat(fd).st_nlink == 0:
            return fd
        os.close(fd)
        raise OSError(_errno.EEXIST, f"{path}: replaced while it was made")
    directory = os.path.dirname(path) or "/"
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno not in (_errno.EOPNOTSUPP, _errno.EISDIR, _errno.EINVAL):
            raise
    # no O_TMPFILE on this filesystem: a fresh name, unlinked at once
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pyckpt-deleted-")
    os.unlink(tmp)
    return fd


def make_deleted(
    path: str, c: Contents, st_mode: int, size: int, uid: int, gid: int
) -> int:
    """A new unlinked regular file (O_RDWR, close-on-exec) holding c, made
    in the directory ``path`` was deleted from."""
    fd = _create_unlinked(path)
    try:
        _fill(fd, c, st_mode, size, uid, gid)
    except BaseException:
        os.close(fd)
        raise
    return fd


def reopen(fd: int, f_flags: int) -> int:
    """Another open file on fd's inode, with its own access mode and flags."""
    keep = os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK | os.O_NOATIME | os.O_DIRECT
    return os.open(f"/proc/self/fd/{fd}", (f_flags & keep) | os.O_CLOEXEC)


CONTENTS_KINDS = frozenset({FileKind.MEMFD, FileKind.DELETED})


_EXTENT = struct.Struct("=QQ")  # struct ckpt_contents_extent: offset, len


def _unpack_extents(raw: bytes) -> list[tuple[int, int]]:
    return list(_EXTENT.iter_unpack(raw))


def _check_contents(rec: Record, name: str) -> None:
    f = rec.fields
    # the extents, packed: in order, none empty, none overlapping the one
    # before, their lens adding up to the data (st_size: read_file's)
    end = total = 0
    for i, (off, n) in enumerate(_EXTENT.iter_unpack(f["extents"])):
        if not n:
            raise bad(rec, name, f"extent {i} is empty")
        if off < end:
            raise bad(rec, name, f"extent {i} at {off} overlaps the one before")
        end = off + n
        total += n
    if total != f["data_len"]:
        raise bad(rec, name, f"extents hold {total} bytes, data_len is {f['data_len']}")
    if f["objref"] <= 0:
        raise bad(rec, name, f"objref {f['objref']} <= 0")
    if f["same_as"] < 0 or f["same_as"] == f["objref"]:
        raise bad(rec, name, f"same_as {f['same_as']}: not another file")
    if f["seals"] & ~lib.CKPT_SEALS:
        raise bad(rec, name, f"unknown seals {f['seals']:#x}")
    if f["same_as"] and (f["seals"] or f["data_len"] or f["nr_extents"]):
        raise bad(rec, name, f"same_as {f['same_as']} with seals or data of its own")


class ContentsKind(Kind):
    """MEMFD and DELETED: files no path reopens, their contents saved."""

    name = "contents"
    reparse = True
    limit = ("contents_bytes", "bytes of file contents")
    kinds = (FileKind.MEMFD, FileKind.DELETED)
    reported = frozenset({FileKind.REG})
    records = (
        (
            HdrType.CONTENTS,
            Layout(
                "struct ckpt_hdr_contents",
                (
                    Var(
                        "extents",
                        "nr_extents",
                        "CKPT_CONTENTS_EXTENTS_MAX",
                        "struct ckpt_contents_extent",
                    ),
                    Var("data", "data_len", "CKPT_CONTENTS_DATA_MAX"),
                ),
            ),
            _check_contents,
        ),
    )

    # ---- checkpoint ----

    def claims(self, kind: FileKind, r: FdRef) -> bool:
        # nlink first: most regular files have a name, and then no link
        # needs decoding or reading
        st = r.stat
        return st.st_nlink == 0 and is_deleted(r.link, st)

    def checkpoint(self, col: Collector, f: File, r: FdRef) -> bool:
        st = os.fstat(r.local)
        name = memfd_name(r.link)
        fs = fs_type(r.local)
        if fs == HUGETLBFS_MAGIC:
            self.problem(col, r, f"{r.link}: a hugetlbfs file: not supported")
            return False
        if name is not None and fs == TMPFS_MAGIC:
            f.kind, f.path = FileKind.MEMFD, name
        else:
            f.kind, f.path = FileKind.DELETED, deleted_path(r.link)
        f.st_dev, f.st_ino, f.st_mode = st.st_dev, st.st_ino, st.st_mode
        f.st_uid, f.st_gid, f.st_size = st.st_uid, st.st_gid, st.st_size
        f.extra = Contents()  # filled by collect(): one read per inode
        return True

    def collect(self, col: Collector) -> None:
        first: dict[tuple[int, int], int] = {}  # inode -> first file's objref
        limit = col.opts.contents_limit
        for f in sorted(col.of_kind(*CONTENTS_KINDS), key=lambda f: f.objref):
            objref = f.objref
            key = (f.st_dev, f.st_ino)
            if key in first:
                f.extra = Contents(same_as=first[key])
                continue
            first[key] = objref
            r = col.first[objref]
            try:
                f.extra = save(
                    r.local,
                    os.fstat(r.local),
                    limit,
                    f.kind == FileKind.MEMFD,
                    lambda n, r=r: col.take(r, n, "its contents"),
                )
            except TooBig as e:
                self.problem(
                    col,
                    r,
                    f"{r.link}: {e} (--max-file-contents / "
                    "Options.contents_limit raises it)",
                )
            except OSError as e:
                self.problem(col, r, f"{r.link}: cannot read its contents: {e}")

    # ---- the image ----

    def write_file(self, w: Writer, image: Image, f: File, tag: int) -> None:
        c = extra(f, Contents)
        w.add(
            HdrType.CONTENTS,
            tag,
            {"objref": f.objref, "same_as": c.same_as, "seals": c.seals},
            {
                "extents": b"".join(_EXTENT.pack(o, n) for o, n in c.extents),
                "data": c.data,
            },
        )

    def read_file(self, p: Reader, image: Image, f: File, rec: Record) -> None:
        r = p.child(rec, HdrType.CONTENTS, f"after a {f.kind.name} file")
        c = r.fields
        where = "CONTENTS record"
        if not stat.S_ISREG(f.st_mode):
            raise ImageError(
                rec.offset, f"FILE record: {f.kind.name} with st_mode {f.st_mode:#o}"
            )
        if (
            f.kind == FileKind.MEMFD
            and len(rec.fields["path"]) > lib.CKPT_MEMFD_NAME_MAX
        ):
            raise ImageError(
                rec.offset,
                f"FILE record: a MEMFD name above {lib.CKPT_MEMFD_NAME_MAX} bytes",
            )
        if f.kind == FileKind.DELETED and not f.path.startswith("/"):
            raise ImageError(
                rec.offset, "FILE record: a DELETED file's path is not absolute"
            )
        if f.kind == FileKind.DELETED and c["seals"]:
            raise ImageError(r.offset, f"{where}: seals on a DELETED file")
        if c["data_len"] > max(f.st_size, 0):
            raise ImageError(
                r.offset,
                f"{where}: data_len {c['data_len']} above its FILE's st_size "
                f"{f.st_size}",
            )
        extents = _unpack_extents(c["extents"])
        if extents and extents[-1][0] + extents[-1][1] > f.st_size:
            last = extents[-1][0] + extents[-1][1]
            raise ImageError(
                r.offset,
                f"{where}: extent {len(extents) - 1} ends at {last}, past "
                f"st_size {f.st_size}",
            )
        same = c["same_as"]
        if same:
            known = image.files.get(same)
            if (
                known is None
                or known.kind != f.kind
                or not isinstance(known.extra, Contents)
                or known.extra.same_as
                or (known.st_dev, known.st_ino) != (f.st_dev, f.st_ino)
            ):
                raise ImageError(
                    r.offset,
                    f"{where}: same_as {same} is no earlier {f.kind.name} file "
                    "with its data on the same inode",
                )
        f.extra = Contents(
            data=c["data"], seals=c["seals"], same_as=same, extents=extents
        )

    def check_model(self, image: Image) -> None:
        for f in image.files.values():
            if f.kind in CONTENTS_KINDS:
                extra(f, Contents)

    # ---- restart ----

    def restore(self, objs: Objects, files: list[File], plan: Plan) -> None:
        groups: dict[int, list[File]] = {}
        for f in files:
            root = extra(f, Contents).same_as or f.objref
            groups.setdefault(root, []).append(f)
        # made by a helper with the rights of the first holder of the
        # inode's first file: a memfd belongs to its user, a deleted file
        # is created (and its name unlinked) in its directory as that
        # user could, never as root through the user's directories
        firsts = [plan.image.files[root] for root in groups]
        for creds, mine in by_holder(plan, firsts):
            part = {f.objref: groups[f.objref] for f in mine}
            objs.as_holder(
                creds, functools.partial(self._make_all, groups=part, plan=plan)
            )

    def _make_all(
        self, objs: Objects, groups: dict[int, list[File]], plan: Plan
    ) -> None:
        for root, group in groups.items():
            first = plan.image.files[root]
            try:
                self._make(objs, first, group)
            except OSError as e:
                what = "memfd" if first.kind == FileKind.MEMFD else "deleted file"
                raise RestartError(
                    f"objref {first.objref}: cannot make the {what} "
                    f"{first.path!r} again: {e.strerror or e}",
                    e.errno,
                ) from e
            objs.done()

    def _make(self, objs: Objects, first: File, group: list[File]) -> None:
        c = extra(first, Contents)
        args = (c, first.st_mode, first.st_size, first.st_uid, first.st_gid)
        if first.kind == FileKind.MEMFD:
            origin = objs.keep(make_memfd(first.path, *args))
        else:
            origin = objs.keep(make_deleted(first.path, *args))
        used = False
        for f in group:
            if not used and f.f_flags & os.O_ACCMODE == os.O_RDWR:
                fd, used = origin, True  # the file made is this one
                fcntl.fcntl(fd, fcntl.F_SETFL, f.f_flags & SETFL)
            else:
                fd = objs.keep(reopen(origin, f.f_flags))
            if f.pos:
                os.lseek(fd, f.pos, os.SEEK_SET)
            objs.insert(f.objref, fd)

    def data_bytes(self, image: Image) -> int:
        return sum(contents_bytes(f) for f in image.files.values())

    # ---- show ----

    def describe(self, f: File) -> str:
        c = f.extra
        what = f"memfd:{f.path}" if f.kind == FileKind.MEMFD else f"{f.path} (deleted)"
        if not isinstance(c, Contents):
            return what
        if c.same_as:
            return f"{what} (the inode of objref {c.same_as})"
        seals = f", seals {c.seals:#x}" if f.kind == FileKind.MEMFD else ""
        return f"{what} ({f.st_size} bytes, {len(c.data)} stored{seals})"


KIND = ContentsKind()
