"""pyckpt.image on the host: round trips, the layout, and corrupt images."""

from __future__ import annotations

import os
import zlib
from typing import Any

import pytest

from pyckpt.abi import FileKind, FMode, HdrType, ffi, lib
from pyckpt.image import (
    Epoll,
    EpollItem,
    ErrorRecord,
    Fd,
    File,
    Head,
    Image,
    Pipe,
    Record,
    Task,
    iter_records,
)

RW = FMode.READ | FMode.WRITE


def rich_image() -> Image:
    """Three tasks sharing files, pipes (with data, empty, half-closed), a
    FIFO, an eventfd, an epoll with items, errors, a non-UTF-8 path."""
    head = Head(
        time=1_700_000_000.125,
        sysname="Linux",
        release="6.12.0-test",
        version="#1 SMP PREEMPT_DYNAMIC",
        machine="x86_64",
        format_version=lib.CKPT_FORMAT_VERSION,
        abi_version=lib.CKPT_ABI_VERSION,
    )
    files = [
        File(1, FileKind.CHR, os.O_RDWR, RW, path="/dev/null"),
        File(2, FileKind.PIPE, os.O_RDONLY, FMode.READ, pipe_objref=3),
        File(4, FileKind.PIPE, os.O_WRONLY | os.O_NONBLOCK, FMode.WRITE, pipe_objref=3),
        File(
            5, FileKind.REG, os.O_RDWR | os.O_APPEND, RW, pos=4096, path="/tmp/a\udcff"
        ),
        File(6, FileKind.FIFO, os.O_RDWR, RW, path="/run/fifo", pipe_objref=7),
        File(8, FileKind.EVENTFD, os.O_RDWR, RW, count=42, efd_flags=1),
        File(9, FileKind.EPOLL, os.O_RDWR, RW, external=True),
        File(10, FileKind.PIPE, os.O_RDONLY, FMode.READ, pipe_objref=11),
        File(12, FileKind.DIR, os.O_RDONLY | os.O_DIRECTORY, FMode.READ, path="/"),
        File(13, FileKind.SOCK, os.O_RDWR, RW),
    ]
    pipes = [
        Pipe(3, 65536, b"hello\x00\xffworld"),
        Pipe(7, 4096, b""),
        Pipe(11, 8192, b"orphaned", no_writer=True),
    ]
    tasks = [
        Task(
            100,
            1,
            100,
            100,
            "init",
            ["/bin/sh", "-c", "", "x\udcfe"],
            "/",
            [Fd(0, 1), Fd(1, 4, cloexec=True), Fd(2, 1), Fd(3, 2), Fd(7, 9)],
        ),
        Task(
            101,
            100,
            100,
            101,
            "worker",
            ["worker"],
            "/home/\udcc3",
            [Fd(0, 2), Fd(4, 5), Fd(5, 6), Fd(6, 8), Fd(9, 9)],
        ),
        Task(102, 101, 100, 101, "", [], "/tmp", [Fd(10, 10), Fd(11, 12), Fd(12, 13)]),
        Task(103, 100, 103, 103, "idle", ["idle"], "/", []),
    ]
    epolls = [
        Epoll(9, [EpollItem(2, 3, 0x1, 0xDEADBEEF), EpollItem(8, 6, 0x5, 2**64 - 1)]),
    ]
    errors = [
        ErrorRecord(-95, "socket not supported", objref=13, pid=102, fd=12),
        ErrorRecord(0, "a note"),
    ]
    return Image(
        head=head,
        tasks=tasks,
        files={f.objref: f for f in files},
        pipes={p.objref: p for p in pipes},
        epolls={e.objref: e for e in epolls},
        errors=errors,
    )


@pytest.fixture(scope="module")
def image() -> Image:
    return rich_image()


@pytest.fixture(scope="module")
def data() -> bytes:
    return rich_image().to_bytes()


@pytest.fixture(scope="module")
def records(data: bytes) -> list[Record]:
    return list(iter_records(data))


def first(records: list[Record], rtype: HdrType, n: int = 0) -> Record:
    return [r for r in records if r.type == rtype][n]


# ---- round trip and layout ---------------------------------------------------


def test_round_trip(image: Image, data: bytes) -> None:
    again = Image.from_bytes(data)
    assert again == image
    assert again.to_bytes() == data


def test_writer_order_tags_ptags(records: list[Record]) -> None:
    types = [r.type.name for r in records]
    assert types[:2] == ["HEAD", "TREE"]
    assert types[-4:] == ["EPOLL", "ERROR", "ERROR", "TAIL"]
    assert [r.tag for r in records] == list(range(1, len(records) + 1))
    by_tag = {r.tag: r for r in records}
    parent = {
        HdrType.TASK: {HdrType.TREE},
        HdrType.FD: {HdrType.TASK},
        HdrType.FILE: {HdrType.FD},
        HdrType.OBJREF: {HdrType.FD},
        HdrType.PIPE: {HdrType.FILE},
        HdrType.EPOLL: {HdrType.FILE},
    }
    for r in records:
        assert r.len % 8 == 0 and r.offset % 8 == 0
        if r.type in parent:
            assert by_tag[r.ptag].type in parent[r.type]
        else:
            assert r.ptag == 0
    epoll = first(records, HdrType.EPOLL)
    assert by_tag[epoll.ptag].fields["objref"] == epoll.fields["objref"] == 9
    # pipe 3: PIPE after its first FILE (objref 4, task 100 fd 1) only
    pipes = [r for r in records if r.type == HdrType.PIPE]
    assert [p.fields["objref"] for p in pipes] == [3, 7, 11]
    assert by_tag[pipes[0].ptag].fields["objref"] == 4
    tail = records[-1]
    assert tail.fields["nr_records"] == len(records)


def test_layout_from_cffi(data: bytes, records: list[Record]) -> None:
    """Fields sit where the compiler put them in ckpt.h's structs."""

    def u32(off: int) -> int:
        return int.from_bytes(data[off : off + 4], "little", signed=True)

    fd = first(records, HdrType.FD, 1)  # task 100's fd 1 -> objref 4, cloexec
    base = fd.offset
    assert u32(base + ffi.offsetof("struct ckpt_hdr_fd", "fd")) == 1
    assert u32(base + ffi.offsetof("struct ckpt_hdr_fd", "objref")) == 4
    assert (
        u32(base + ffi.offsetof("struct ckpt_hdr_fd", "flags")) == lib.CKPT_FD_CLOEXEC
    )
    assert fd.len == ffi.sizeof("struct ckpt_hdr_fd")
    hdr = ffi.offsetof("struct ckpt_hdr", "len")
    assert u32(base + hdr) == fd.len
    head = records[0]
    magic = ffi.offsetof("struct ckpt_hdr_head", "magic")
    assert data[magic : magic + 8] == b"\0pyckpt\n"
    machine = ffi.offsetof("struct ckpt_hdr_head", "machine")
    assert data[machine : machine + lib.CKPT_UTS_LEN] == b"x86_64".ljust(65, b"\0")
    assert head.len == ffi.sizeof("struct ckpt_hdr_head")
    # a TASK's variable part: comm, argv (NUL-terminated), cwd, zero padding
    task = first(records, HdrType.TASK)
    start = task.offset + ffi.sizeof("struct ckpt_hdr_task")
    var = b"init" + b"/bin/sh\0-c\0\0x\xfe\0" + b"/"
    assert data[start : start + len(var)] == var
    assert data[start + len(var) : task.end] == bytes(task.end - start - len(var))
    assert task.fields["argv_len"] == 15 and task.fields["argc"] == 4
    # EPOLL items are struct ckpt_epoll_item[] after struct ckpt_hdr_epoll
    ep = first(records, HdrType.EPOLL)
    item = ep.offset + ffi.sizeof("struct ckpt_hdr_epoll")
    size = ffi.sizeof("struct ckpt_epoll_item")
    d = item + size + ffi.offsetof("struct ckpt_epoll_item", "data")
    assert data[d : d + 8] == b"\xff" * 8
    tail = records[-1]
    crc = ffi.offsetof("struct ckpt_hdr_tail", "checksum")
    assert data[tail.offset + crc : tail.offset + crc + 4] == zlib.crc32(
        data[: tail.offset]
    ).to_bytes(4, "little")
    assert tail.end == len(data)


def test_versions_zero_mean_current() -> None:
    img = rich_image()
    img.head.format_version = img.head.abi_version = 0
    again = Image.from_bytes(img.to_bytes())
    assert again.head.format_version == lib.CKPT_FORMAT_VERSION
    assert again.head.abi_version == lib.CKPT_ABI_VERSION


@pytest.mark.parametrize("t", [0.0, 1.5, 1_700_000_000.999999, -1.25, 2.0**40 + 0.5])
def test_time(t: float) -> None:
    img = Image(head=Head(t, "a", "b", "c", "d"))
    rec = next(iter_records(img.to_bytes()))
    assert 0 <= rec.fields["time_nsec"] < 10**9
    assert Image.from_bytes(img.to_bytes()).head.time == t


def test_save_load(tmp_path: Any, image: Image) -> None:
    path = tmp_path / "img"
    image.save(path)
    assert Image.load(path) == image
    assert os.listdir(tmp_path) == ["img"]
    # a model that cannot be written leaves the old file and no temp file
    bad = rich_image()
    bad.files[99] = File(99, FileKind.REG, 0, FMode.READ, path="/x")
    with pytest.raises(ValueError, match=r"files \[99\] are referenced by no Fd"):
        bad.save(path)
    assert Image.load(path) == image
    assert os.listdir(tmp_path) == ["img"]
