"""signalfd: the signals it reads (its mask) and O_NONBLOCK.

Checkpoint reads the mask from fdinfo (``sigmask:``, what the fd reads,
bit sig - 1); restart makes the fd again with signalfd(2) through pyckpt.syscalls
(Python 3.11 has no os.signalfd).  Pending signals are the task's, not the
file's: they are not saved (the README says so).  SFD_CLOEXEC is the fd's
flag (FD record), O_NONBLOCK the file's (FILE f_flags).
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass

from pyckpt import syscalls
from pyckpt.abi import FileKind, HdrType
from pyckpt.errors import RestartError
from pyckpt.kinds.base import (
    Collector,
    FdRef,
    Kind,
    Objects,
    Plan,
    Reader,
    Writer,
    extra,
)
from pyckpt.model import File, Image
from pyckpt.records import Layout, Record, bad

# signalfd(2) silently drops these: a mask holding them is not one it made
UNBLOCKABLE = (1 << (signal.SIGKILL - 1)) | (1 << (signal.SIGSTOP - 1))
_SIGMASK = re.compile(r"^sigmask:\s*([0-9a-fA-F]+)\s*$", re.MULTILINE)


@dataclass
class Signalfd:
    """SIGNALFD record: what a signalfd file reads."""

    sigmask: int


def parse_fdinfo(fdinfo: str) -> Signalfd:
    """The state of a signalfd from its fdinfo text; ValueError if absent."""
    m = _SIGMASK.search(fdinfo)
    if m is None:
        raise ValueError("no sigmask: line in its fdinfo")
    return Signalfd(int(m[1], 16) & ((1 << 64) - 1))


def make(state: Signalfd, f_flags: int) -> int:
    """A new signalfd (close-on-exec) with the saved mask and O_NONBLOCK."""
    flags = os.O_CLOEXEC | (f_flags & os.O_NONBLOCK)
    return syscalls.signalfd(state.sigmask, flags)


def signals(mask: int) -> list[str]:
    """The signal names of a mask, for show."""
    out = []
    for sig in range(1, 65):
        if mask >> (sig - 1) & 1:
            try:
                out.append(signal.Signals(sig).name)
            except ValueError:
                out.append(str(sig))
    return out


def _check_signalfd(rec: Record, name: str) -> None:
    f = rec.fields
    if f["objref"] <= 0:
        raise bad(rec, name, f"objref {f['objref']} <= 0")
    if f["sigmask"] & UNBLOCKABLE:
        raise bad(rec, name, f"sigmask {f['sigmask']:#x} holds SIGKILL or SIGSTOP")


class SignalfdKind(Kind):
    name = "signalfd"
    reparse = True
    kinds = (FileKind.SIGNALFD,)
    reported = frozenset({FileKind.ANON})
    records = ((HdrType.SIGNALFD, Layout("struct ckpt_hdr_signalfd"), _check_signalfd),)

    def claims(self, kind: FileKind, r: FdRef) -> bool:
        return r.link == "anon_inode:[signalfd]"

    def checkpoint(self, col: Collector, f: File, r: FdRef) -> bool:
        try:
            f.extra = parse_fdinfo(r.fdinfo)
        except ValueError as e:
            self.problem(col, r, str(e))
            return False
        f.kind = FileKind.SIGNALFD
        return True

    def write_file(self, w: Writer, image: Image, f: File, tag: int) -> None:
        s = extra(f, Signalfd)
        w.add(HdrType.SIGNALFD, tag, {"objref": f.objref, "sigmask": s.sigmask})

    def read_file(self, p: Reader, image: Image, f: File, rec: Record) -> None:
        r = p.child(rec, HdrType.SIGNALFD, "after a SIGNALFD file")
        f.extra = Signalfd(r.fields["sigmask"])

    def check_model(self, image: Image) -> None:
        for f in image.files.values():
            if f.kind == FileKind.SIGNALFD:
                extra(f, Signalfd)

    def restore(self, objs: Objects, files: list[File], plan: Plan) -> None:
        for f in files:
            try:
                fd = objs.keep(make(extra(f, Signalfd), f.f_flags))
            except OSError as e:
                raise RestartError(f"objref {f.objref}: signalfd: {e}") from e
            objs.insert(f.objref, fd)
            objs.done()

    def describe(self, f: File) -> str:
        s = f.extra
        names = ",".join(signals(s.sigmask)) if isinstance(s, Signalfd) else "?"
        return f"signalfd [{names}]"


KIND = SignalfdKind()
