"""signalfd: the signals it reads (its mask) and O_NONBLOCK.

Checkpoint reads the mask from fdinfo (``sigmask:``, what the fd reads,
bit sig - 1); restart makes the fd again with signalfd(2) through ctypes
(Python 3.11 has no os.signalfd).  Pending signals are the task's, not the
file's: they are not saved (the README says so).  SFD_CLOEXEC is the fd's
flag (FD record), O_NONBLOCK the file's (FILE f_flags).
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass

from pyckpt.kinds import _libc

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
    return _libc.signalfd(state.sigmask, flags)


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
