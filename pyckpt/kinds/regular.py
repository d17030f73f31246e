"""Regular files and directories: reopened by path, identity checked.

Checkpoint records the path and what ``fstat`` said (type, device, inode,
mode, owner, size); restart opens the path ``O_PATH|O_NOFOLLOW``, compares,
and only then opens it for real, non-blocking (``open_verified``), all in
a helper with the rights of the file's first holder (``Objects.as_holder``:
a non-root task's files are reopened as that task could, never as root).  FIFOs
(kinds/pipe.py) and character devices reuse both halves.
"""

from __future__ import annotations

import fcntl
import functools
import os
import stat

from pyckpt.abi import FileKind
from pyckpt.errors import RestartError
from pyckpt.kinds.base import Collector, FdRef, Kind, Objects, Plan, by_holder
from pyckpt.model import File
from pyckpt.names import type_name

# creation flags: the file exists already, its content is not to be touched
_OPEN_DROP = os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY
# what F_SETFL may change (the kernel's SETFL_MASK, O_DIRECT aside: pipes
# refuse it through fcntl, pipe2() takes it)
SETFL = os.O_APPEND | os.O_NONBLOCK | os.O_ASYNC | os.O_NOATIME

TYPES = {
    FileKind.REG: stat.S_IFREG,
    FileKind.DIR: stat.S_IFDIR,
    FileKind.FIFO: stat.S_IFIFO,
    FileKind.CHR: stat.S_IFCHR,
}


# ---- checkpoint ----------------------------------------------------------------


def record_path(col: Collector, f: File, r: FdRef) -> str:
    """f.path and f.st_* from the file the tree holds, if restart can reopen
    it at that path; else why not (the caller refuses)."""
    st = r.stat  # the module's walk: no copy of the fd needed
    path = r.link
    if path.endswith(" (deleted)") or (
        st.st_nlink == 0 and not stat.S_ISCHR(st.st_mode)
    ):
        return f"{path}: the file was deleted"
    there = col.stat_path(path) if path.startswith("/") else None
    if there is None or (there.st_dev, there.st_ino) != (st.st_dev, st.st_ino):
        return (
            f"{path}: not reachable at its path (moved, replaced or in another "
            "mount namespace)"
        )
    f.path = path
    f.st_dev, f.st_ino, f.st_mode = st.st_dev, st.st_ino, st.st_mode
    f.st_uid, f.st_gid, f.st_size = st.st_uid, st.st_gid, st.st_size
    return ""


# ---- restart -------------------------------------------------------------------


def check_path(f: File) -> None:
    """RestartError unless f names an absolute path and a type to check."""
    where = f"objref {f.objref}"
    if not f.path.startswith("/"):
        raise RestartError(f"{where}: no absolute path ({f.path!r})")
    if stat.S_IFMT(f.st_mode) != TYPES.get(FileKind(f.kind)):
        raise RestartError(
            f"{where}: {f.path}: the image records no matching file type "
            f"(st_mode {f.st_mode:#o} for a {FileKind(f.kind).name}): refusing to "
            "reopen it unchecked"
        )


def verify(f: File, st: os.stat_result, relocate: bool) -> None:
    """RestartError (what differs) unless st is the file the image recorded."""
    diffs = []
    if stat.S_IFMT(st.st_mode) != stat.S_IFMT(f.st_mode):
        diffs.append(f"type {type_name(st.st_mode)}, recorded {type_name(f.st_mode)}")
    if (st.st_uid, st.st_gid) != (f.st_uid, f.st_gid):
        diffs.append(f"owner {st.st_uid}:{st.st_gid}, recorded {f.st_uid}:{f.st_gid}")
    if not relocate and (st.st_dev, st.st_ino) != (f.st_dev, f.st_ino):
        diffs.append(
            f"device/inode {st.st_dev:#x}/{st.st_ino}, recorded "
            f"{f.st_dev:#x}/{f.st_ino} (another file: --relocate allows it)"
        )
    if diffs:
        raise RestartError(
            f"objref {f.objref}: {f.path}: not the file that was checkpointed: "
            + "; ".join(diffs)
        )


def open_verified(f: File, flags: int, relocate: bool) -> int:
    """Open f.path as checkpointed, or RestartError: no symlink followed at
    the last component, nothing opened before its identity is checked (an
    O_PATH fd runs no driver's open), never blocking (O_NONBLOCK, cleared
    afterwards unless recorded), never creating or truncating."""
    try:
        pfd = os.open(f.path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise RestartError(
            f"objref {f.objref}: cannot reopen {f.path}: {e.strerror}", e.errno
        ) from e
    try:
        verify(f, os.fstat(pfd), relocate)
        flags = (flags & ~_OPEN_DROP & ~os.O_NOFOLLOW) | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(f"/proc/self/fd/{pfd}", flags)
        except OSError as e:
            raise RestartError(
                f"objref {f.objref}: cannot reopen {f.path}: {e.strerror}", e.errno
            ) from e
    finally:
        os.close(pfd)
    fcntl.fcntl(fd, fcntl.F_SETFL, f.f_flags & SETFL)
    return fd


class Regular(Kind):
    name = "regular"
    kinds = (FileKind.REG, FileKind.DIR)
    reported = frozenset(kinds)

    def checkpoint(self, col: Collector, f: File, r: FdRef) -> bool:
        why = record_path(col, f, r)
        if why:
            self.problem(col, r, why)
        return not why

    def check(self, files: list[File], plan: Plan) -> None:
        for f in files:
            check_path(f)

    def restore(self, objs: Objects, files: list[File], plan: Plan) -> None:
        # every path is walked and opened with its holder's rights: a file
        # the holder could not open (root passed it the fd) is refused, the
        # user's directories lead root nowhere
        for creds, group in by_holder(plan, files):
            objs.as_holder(
                creds, functools.partial(self._reopen, files=group, plan=plan)
            )

    def _reopen(self, objs: Objects, files: list[File], plan: Plan) -> None:
        for f in files:
            flags = f.f_flags
            if f.kind == FileKind.DIR:
                flags |= os.O_DIRECTORY
            try:
                fd = objs.keep(open_verified(f, flags, plan.relocate))
            except RestartError as e:
                raise RestartError(
                    f"{plan.where(f.objref)}: {e} (reopened with the rights of "
                    f"uid {os.geteuid()}, its holder's)",
                    e.errno,
                ) from e
            if f.kind == FileKind.REG:
                size = os.fstat(fd).st_size
                if size < f.pos:
                    plan.warnings.append(
                        f"objref {f.objref}: {f.path} is now {size} bytes, "
                        f"shorter than its saved offset {f.pos}"
                    )
            if f.pos:
                os.lseek(fd, f.pos, os.SEEK_SET)
            objs.insert(f.objref, fd)
            objs.done()  # hand it over: the coordinator holds few fds at once

    def describe(self, f: File) -> str:
        return f"{FileKind(f.kind).name.lower()} {f.path}"


KIND = Regular()
