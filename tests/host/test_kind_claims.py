"""kinds.claim(): which kind saves a file, by the kind the module reported
and what the walk said of it (each kind is asked only for its ``reported``
kinds)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import pytest

from pyckpt import kinds
from pyckpt.abi import FileKind, FMode
from pyckpt.device import FileInfo


@dataclass
class Ref:
    """What claims() reads of a checkpointer _FdRef."""

    link: str
    info: FileInfo

    @property
    def stat(self) -> os.stat_result:
        i = self.info
        return os.stat_result(
            (i.st_mode, i.st_ino, i.st_dev, i.st_nlink, 0, 0, 0, 0, 0, 0),
            {"st_rdev": i.st_rdev},
        )


def ref(kind: FileKind, link: str, mode: int = 0, nlink: int = 1, rdev: int = 0):
    info = FileInfo(kind, 0, FMode.READ, 0, 0, st_nlink=nlink, st_rdev=rdev)
    return Ref(link, info._replace(st_mode=mode))


CASES = [
    (FileKind.REG, "/tmp/a", stat.S_IFREG, 1, 0, "regular"),
    (FileKind.REG, "/tmp/a (deleted)", stat.S_IFREG, 0, 0, "contents"),
    (FileKind.REG, "/memfd:x (deleted)", stat.S_IFREG, 0, 0, "contents"),
    (FileKind.DIR, "/tmp", stat.S_IFDIR, 2, 0, "regular"),
    (FileKind.PIPE, "pipe:[7]", stat.S_IFIFO, 1, 0, "pipe"),
    (FileKind.FIFO, "/tmp/fifo", stat.S_IFIFO, 1, 0, "pipe"),
    (FileKind.ANON, "anon_inode:[eventfd]", 0, 1, 0, "eventfd"),
    (FileKind.ANON, "anon_inode:[eventpoll]", 0, 1, 0, "epoll"),
    (FileKind.ANON, "anon_inode:[signalfd]", 0, 1, 0, "signalfd"),
    (FileKind.ANON, "anon_inode:[timerfd]", 0, 1, 0, "timerfd"),
    (FileKind.ANON, "anon_inode:[pidfd]", 0, 1, 0, None),
    (FileKind.ANON, "anon_inode:inotify", 0, 1, 0, None),
    (FileKind.SOCK, "socket:[9]", stat.S_IFSOCK, 1, 0, "unix socket"),
    (FileKind.CHR, "/dev/null", stat.S_IFCHR, 1, os.makedev(1, 3), "chrdev"),
    # /dev/null's path with another device number is not the stateless one
    (FileKind.CHR, "/dev/null", stat.S_IFCHR, 1, os.makedev(4, 1), "tty"),
    (FileKind.CHR, "/dev/pts/0", stat.S_IFCHR, 1, os.makedev(136, 0), "tty"),
]


@pytest.mark.parametrize(("kind", "link", "mode", "nlink", "rdev", "want"), CASES)
def test_claim(kind, link, mode, nlink, rdev, want) -> None:
    got = kinds.claim(kind, ref(kind, link, mode, nlink, rdev))
    assert (got.name if got is not None else None) == want


def test_every_kind_is_reachable() -> None:
    # a kind no reported kind leads to would never save a file
    for k in kinds.KINDS:
        assert k.reported, k.name
        assert all(k in kinds._CLAIMANTS[fk] for fk in k.reported)
