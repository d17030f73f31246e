"""eventfd: its counter and EFD_SEMAPHORE, from fdinfo.

6.1 does not print ``eventfd-semaphore:``: the flag is then unknown
(CKPT_FILE_EFD_SEM_UNKNOWN) and restart warns, once for all of them,
that it restores none.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pyckpt.abi import FileKind, lib
from pyckpt.errors import RestartError
from pyckpt.kinds.base import Collector, FdRef, Kind, Objects, Plan, Reader, extra
from pyckpt.model import File, Image
from pyckpt.records import Record

_INIT_MAX = (1 << 32) - 1  # eventfd(2) takes an unsigned int
_NAMED = 5  # objrefs a warning names
_COUNT = re.compile(r"^eventfd-count:\s*([0-9a-fA-F]+)", re.MULTILINE)
_SEMAPHORE = re.compile(r"^eventfd-semaphore:\s*(\d)", re.MULTILINE)


@dataclass
class Eventfd:
    """An eventfd's state, in its FILE record (count, efd_flags)."""

    count: int = 0
    efd_flags: int = 0  # EFD_SEMAPHORE or 0
    sem_unknown: bool = False  # the kernel did not say (6.1)


def state(f: File) -> Eventfd:
    return extra(f, Eventfd)


class EventfdKind(Kind):
    name = "eventfd"
    kinds = (FileKind.EVENTFD,)
    reported = frozenset({FileKind.ANON})
    file_flags = (("EFD_SEM_UNKNOWN", lib.CKPT_FILE_EFD_SEM_UNKNOWN),)

    def claims(self, kind: FileKind, r: FdRef) -> bool:
        return r.link == "anon_inode:[eventfd]"

    def checkpoint(self, col: Collector, f: File, r: FdRef) -> bool:
        f.kind = FileKind.EVENTFD
        m = _COUNT.search(r.fdinfo)
        e = f.extra = Eventfd(int(m[1], 16) if m else 0)
        m = _SEMAPHORE.search(r.fdinfo)
        if m is None:
            e.sem_unknown = True
        elif m[1] == "1":
            e.efd_flags = os.EFD_SEMAPHORE
        return True

    # ---- the image: its state is in the FILE record ----

    def file_fields(self, f: File) -> dict[str, int]:
        e = state(f)
        sem = lib.CKPT_FILE_EFD_SEM_UNKNOWN if e.sem_unknown else 0
        return {"count": e.count, "efd_flags": e.efd_flags, "flags": sem}

    def read_file(self, p: Reader, image: Image, f: File, rec: Record) -> None:
        r = rec.fields
        sem = bool(r["flags"] & lib.CKPT_FILE_EFD_SEM_UNKNOWN)
        f.extra = Eventfd(r["count"], r["efd_flags"], sem)

    def check_model(self, image: Image) -> None:
        for f in image.files.values():
            if f.kind == FileKind.EVENTFD:
                state(f)

    # ---- restart ----

    def check(self, files: list[File], plan: Plan) -> None:
        # one warning for all: a tree of 10^3 eventfds is one fact, not 10^3
        unknown = [f.objref for f in files if state(f).sem_unknown]
        if unknown:
            which = ", ".join(map(str, unknown[:_NAMED]))
            if len(unknown) > _NAMED:
                which += f" and {len(unknown) - _NAMED} more"
            s = "s" if len(unknown) > 1 else ""
            plan.warnings.append(
                f"{len(unknown)} eventfd{s} (objref{s} {which}) restarted without "
                "EFD_SEMAPHORE: the checkpointing kernel did not say whether it "
                "was set"
            )

    def restore(self, objs: Objects, files: list[File], plan: Plan) -> None:
        for f in files:
            e = state(f)
            flags = os.EFD_CLOEXEC | (e.efd_flags & os.EFD_SEMAPHORE)
            if f.f_flags & os.O_NONBLOCK:
                flags |= os.EFD_NONBLOCK
            if e.count <= _INIT_MAX:
                fd = objs.keep(os.eventfd(e.count, flags))
            else:
                # eventfd(2) takes 32 bits; the counter holds up to 2^64 - 2
                fd = objs.keep(os.eventfd(0, flags))
                try:
                    os.eventfd_write(fd, e.count)
                except (OSError, OverflowError) as err:
                    raise RestartError(
                        f"objref {f.objref}: eventfd count {e.count}: {err}"
                    ) from None
            objs.insert(f.objref, fd)
            objs.done()

    # ---- show ----

    def describe(self, f: File) -> str:
        return f"eventfd count {state(f).count}"

    def file_notes(self, f: File) -> list[str]:
        e = state(f)
        sem = "semaphore unknown" if e.sem_unknown else f"efd_flags {e.efd_flags:#x}"
        return [f"count {e.count} {sem}"]


KIND = EventfdKind()
