"""eventfd: its counter and EFD_SEMAPHORE, from fdinfo.

6.1 does not print ``eventfd-semaphore:``: the flag is then unknown
(CKPT_FILE_EFD_SEM_UNKNOWN) and restart warns, once for all of them,
that it restores none.
"""

from __future__ import annotations

import os
import re

from pyckpt.abi import FileKind
from pyckpt.errors import RestartError
from pyckpt.kinds.base import Collector, FdRef, Kind, Objects, Plan
from pyckpt.model import File

_INIT_MAX = (1 << 32) - 1  # eventfd(2) takes an unsigned int
_NAMED = 5  # objrefs a warning names
_COUNT = re.compile(r"^eventfd-count:\s*([0-9a-fA-F]+)", re.MULTILINE)
_SEMAPHORE = re.compile(r"^eventfd-semaphore:\s*(\d)", re.MULTILINE)


class EventfdKind(Kind):
    name = "eventfd"
    kinds = (FileKind.EVENTFD,)
    reported = frozenset({FileKind.ANON})

    def claims(self, kind: FileKind, r: FdRef) -> bool:
        return r.link == "anon_inode:[eventfd]"

    def checkpoint(self, col: Collector, f: File, r: FdRef) -> bool:
        f.kind = FileKind.EVENTFD
        m = _COUNT.search(r.fdinfo)
        f.count = int(m[1], 16) if m else 0
        m = _SEMAPHORE.search(r.fdinfo)
        if m is None:
            f.efd_sem_unknown = True
        elif m[1] == "1":
            f.efd_flags = os.EFD_SEMAPHORE
        return True

    def check(self, files: list[File], plan: Plan) -> None:
        # one warning for all: a tree of 10^3 eventfds is one fact, not 10^3
        unknown = [f.objref for f in files if f.efd_sem_unknown]
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
            flags = os.EFD_CLOEXEC | (f.efd_flags & os.EFD_SEMAPHORE)
            if f.f_flags & os.O_NONBLOCK:
                flags |= os.EFD_NONBLOCK
            if f.count <= _INIT_MAX:
                fd = objs.keep(os.eventfd(f.count, flags))
            else:
                # eventfd(2) takes 32 bits; the counter holds up to 2^64 - 2
                fd = objs.keep(os.eventfd(0, flags))
                try:
                    os.eventfd_write(fd, f.count)
                except (OSError, OverflowError) as e:
                    raise RestartError(
                        f"objref {f.objref}: eventfd count {f.count}: {e}"
                    ) from None
            objs.insert(f.objref, fd)
            objs.done()

    def describe(self, f: File) -> str:
        return f"eventfd count {f.count}"


KIND = EventfdKind()
