"""Exceptions of pyckpt: an errno, the ioctl that failed, and the kernel's words."""

from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorEntry:
    """One entry of a context's error log (struct ckpt_err_entry)."""

    seq: int
    err: int  # negative errno, as the kernel logged it
    objref: int
    func: str
    msg: str

    @property
    def errno(self) -> int:
        return -self.err

    def __str__(self) -> str:
        where = f" objref {self.objref}" if self.objref else ""
        name = _errno.errorcode.get(-self.err, str(self.err))
        return f"{self.func}{where}: {self.msg} ({name})"


class CkptError(OSError):
    """A /dev/ckpt ioctl failed.

    errno:   the positive errno the ioctl returned
    ioctl:   name of the request (CKPT_IOC_INSERT, ...)
    entries: the error-log entries the kernel wrote during this call
    done:    for batch requests, how many items completed (else None)
    results: for batch requests, the results of the completed items
    """

    def __init__(
        self,
        err: int,
        ioctl: str,
        entries: list[ErrorEntry] | None = None,
        *,
        done: int | None = None,
        results: list[Any] | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(err, os.strerror(err))
        self.ioctl = ioctl
        self.entries = list(entries or [])
        self.done = done
        self.results = list(results or [])
        self.hint = hint

    @property
    def errname(self) -> str:
        return _errno.errorcode.get(self.errno, str(self.errno))

    def __str__(self) -> str:
        text = f"{self.ioctl}: [{self.errname}] {self.strerror}"
        if self.done is not None:
            text += f" after {self.done} item(s)"
        if self.entries:
            text += "; " + "; ".join(str(e) for e in self.entries)
        if self.hint:
            text += f" ({self.hint})"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # keep the extra fields across pickling (pytest-xdist, multiprocessing)
        return (
            _rebuild,
            (self.errno, self.ioctl, self.entries, self.done, self.results, self.hint),
        )


def _rebuild(*args: Any) -> CkptError:
    err, ioctl, entries, done, results, hint = args
    return CkptError(err, ioctl, entries, done=done, results=results, hint=hint)


class DeviceMissingError(CkptError, FileNotFoundError):
    """/dev/ckpt does not exist: the module is not loaded (or this is not the VM)."""
