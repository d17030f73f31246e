"""The decoder of CKPT_IOC_TASK_FDS's entries against cffi's own view of
the same bytes: entries and detail entries filled field by field through
cffi, decoded by device._task_fds (one iter_unpack, text sliced)."""

from __future__ import annotations

from typing import Any

import pytest

from pyckpt.abi import FileKind, FMode, ffi, lib
from pyckpt.device import FileInfo, PipeState, TaskFd, _task_fds

INFO = {
    "kind": int(FileKind.PIPE),
    "f_flags": 0o4002,
    "f_mode": 1,
    "inode_objref": 7,
    "pos": -3,
    "st_dev": 0x801,
    "st_ino": 1 << 40,
    "st_rdev": 5,
    "st_size": 1 << 33,
    "st_mode": 0o10600,
    "st_uid": 1000,
    "st_gid": 1001,
    "st_nlink": 2,
}


def _fill(e: Any, fd: int, objref: int, flags: int) -> None:
    e.fd, e.objref, e.flags = fd, objref, flags
    if flags & lib.CKPT_FD_FIRST:
        for k, v in INFO.items():
            setattr(e.file, k, v)


def _want_info() -> FileInfo:
    kw = dict(INFO)
    kw["kind"], kw["f_mode"] = FileKind(kw["kind"]), FMode(kw["f_mode"])
    return FileInfo(**kw)


@pytest.mark.parametrize("detail", [False, True])
def test_decode_matches_cffi(detail: bool) -> None:
    ctype = "struct ckpt_fd_detail" if detail else "struct ckpt_fd_entry"
    arr = ffi.new(f"{ctype}[]", 4)
    first, cloexec = lib.CKPT_FD_FIRST, lib.CKPT_FD_CLOEXEC
    for i, (fd, objref, flags) in enumerate(
        [(0, 1, first), (1, 1, cloexec), (5, 3, first | cloexec), (9, 4, first)]
    ):
        _fill(arr[i].entry if detail else arr[i], fd, objref, flags)
    if detail:
        arr[0].detail = lib.CKPT_DETAIL_LINK | lib.CKPT_DETAIL_PIPE
        arr[0].link = b"pipe:[1234]"
        arr[0].pipe_bytes, arr[0].pipe_size = 100, 65536
        arr[0].pipe_flags = lib.CKPT_PIPE_NO_WRITER
        arr[2].detail = lib.CKPT_DETAIL_LINK | lib.CKPT_DETAIL_FDINFO
        arr[2].link = b"/tmp/\xff" + b"x" * (lib.CKPT_DETAIL_TEXT_MAX - 7)
        arr[2].fdinfo = b"eventfd-count: 5\n"
        arr[3].link = b"ignored: no detail bit"
    raw = bytes(ffi.buffer(arr))
    got = list(_task_fds(raw, detail))
    info = _want_info()
    if not detail:
        assert got == [
            TaskFd(0, 1, True, False, info),
            TaskFd(1, 1, False, True, None),
            TaskFd(5, 3, True, True, info),
            TaskFd(9, 4, True, False, info),
        ]
        return
    long_link = "/tmp/\udcff" + "x" * (lib.CKPT_DETAIL_TEXT_MAX - 7)
    assert got == [
        TaskFd(0, 1, True, False, info, "pipe:[1234]", None,
               PipeState(100, 65536, False, True)),
        TaskFd(1, 1, False, True, None),
        TaskFd(5, 3, True, True, info, long_link, "eventfd-count: 5\n", None),
        TaskFd(9, 4, True, False, info),
    ]  # fmt: skip
