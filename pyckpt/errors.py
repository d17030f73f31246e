"""Exceptions of pyckpt, all under one root, pyckpt.Error:

    Error
      CkptError (also an OSError)    a /dev/ckpt ioctl failed
        DeviceMissingError           /dev/ckpt does not exist
      ImageError (also a ValueError) a malformed or untrusted image
      CheckpointError                a tree cannot be checkpointed
      RestartError                   an image cannot be restarted

Each carries ``errno`` where one applies (0 otherwise).
"""

from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass
from typing import Any


class Error(Exception):
    """The root of every exception pyckpt's API raises on purpose."""

    errno: int = 0


class ImageError(Error, ValueError):
    """A malformed image; ``offset`` is the byte offset of the bad record."""

    def __init__(self, offset: int, msg: str, errno: int = 0) -> None:
        super().__init__(f"image offset {offset}: {msg}")
        self.offset = offset
        self.msg = msg
        self.errno = errno

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.offset, self.msg, self.errno))


class CheckpointError(Error):
    """The tree cannot be checkpointed; nothing on the system was changed.

    problems: one line per problem found (all of them, not just the first)
    errno:    an errno in the spirit of the kernel's (EBUSY for leaks), or 0
    """

    def __init__(
        self, msg: str, problems: list[str] | None = None, errno: int = 0
    ) -> None:
        self.problems = list(problems or [])
        self.errno = errno
        if self.problems:
            msg += "\n" + "\n".join(f"  {p}" for p in self.problems)
        super().__init__(msg)


class RestartError(Error):
    """Restart failed; nothing it created is left (processes, fds, context)."""

    def __init__(self, msg: str, errno: int = 0) -> None:
        super().__init__(msg)
        self.errno = errno


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


class CkptError(OSError, Error):
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
