"""Every kind of open file pyckpt can save, one module each, in one table.

``KINDS`` is linux-cr's table of ``ckpt_obj_ops``: its order is the order
restart makes the kinds (an epoll file after its targets' kinds, so that
its late step finds them).  Adding a kind means one new module (see
``base.Kind``), its line here, and its FILE kind and records in ``ckpt.h``.

  kind      module        FILE.kind       records      reopened / recreated
  regular   regular.py    REG, DIR        -            by path, identity checked
  pipe      pipe.py       PIPE, FIFO      PIPE         pipe2() / FIFO by path
  eventfd   eventfd.py    EVENTFD         -            eventfd(count, flags)
  unix      unix.py       UNIX            UNIX,        socketpair(), bind/listen,
                                          UNIX_MSG     connect+accept; queues re-sent
  signalfd  signalfd.py   SIGNALFD        SIGNALFD     signalfd(mask, flags)
  timerfd   timerfd.py    TIMERFD         TIMERFD      timerfd_create + settime,
                                                       unread ticks set back
  contents  memfd.py      MEMFD, DELETED  CONTENTS     memfd_create / unlinked
                                                       file, data, then seals
  chrdev    chrdev.py     CHR             -            by path, rdev checked
  tty       tty.py        TTY             TTY          the restarter's stdio
  epoll     epoll.py      EPOLL           EPOLL        epoll_create, items late
"""

from __future__ import annotations

from pyckpt.abi import FileKind, HdrType
from pyckpt.kinds import (
    chrdev,
    epoll,
    eventfd,
    memfd,
    pipe,
    regular,
    signalfd,
    timerfd,
    tty,
    unix,
)
from pyckpt.kinds.base import FdRef, Kind
from pyckpt.records import register

__all__ = ["KINDS", "Kind", "by_file_kind", "by_record", "claim"]

KINDS: tuple[Kind, ...] = (
    # before regular: a deleted file is REG to the module, and claimed here
    memfd.KIND,
    regular.KIND,
    pipe.KIND,
    eventfd.KIND,
    unix.KIND,
    signalfd.KIND,
    timerfd.KIND,
    chrdev.KIND,  # before tty: it claims the stateless devices first
    tty.KIND,
    epoll.KIND,
)

_BY_FILE_KIND: dict[int, Kind] = {}
_BY_RECORD: dict[int, Kind] = {}
for _k in KINDS:
    for _fk in _k.kinds:
        if _fk in _BY_FILE_KIND:
            raise ImportError(
                f"{_fk.name} owned by {_BY_FILE_KIND[_fk].name} and {_k.name}"
            )
        _BY_FILE_KIND[_fk] = _k
    for _rt, _layout, _check in _k.records:
        register(_rt, _layout, _check)
        _BY_RECORD[_rt] = _k

TRAILERS: frozenset[HdrType] = frozenset(t for k in KINDS for t in k.trailers)
# FILE kinds whose records name the object they are ends of (pipe_objref)
ENDS: frozenset[FileKind] = frozenset(fk for k in KINDS if k.ends for fk in k.kinds)
_BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}
# FILE flag bits a kind owns: by FILE kind (a mask), and their names
FILE_FLAGS: dict[int, int] = {
    fk: sum(bit for _, bit in k.file_flags) for k in KINDS for fk in k.kinds
}
FILE_FLAG_NAMES: dict[int, str] = {bit: n for k in KINDS for n, bit in k.file_flags}

# module-reported kind -> the kinds that may claim such a file, in KINDS order
_CLAIMANTS: dict[FileKind, tuple[Kind, ...]] = {
    fk: tuple(k for k in KINDS if fk in k.reported) for fk in FileKind
}


def by_file_kind(kind: int) -> Kind | None:
    """The kind that writes FILE.kind ``kind`` (None: no kind restores it)."""
    return _BY_FILE_KIND.get(kind)


def by_name(name: str) -> Kind | None:
    """The kind called ``name`` (the key of its state in ``Image.extra``)."""
    return _BY_NAME.get(name)


def by_record(rtype: int) -> Kind | None:
    return _BY_RECORD.get(rtype)


def claim(kind: FileKind, r: FdRef) -> Kind | None:
    """The kind that saves a file the module reported as ``kind``."""
    for k in _CLAIMANTS[kind]:
        if k.claims(kind, r):
            return k
    return None
