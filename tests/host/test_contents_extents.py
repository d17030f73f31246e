"""Issue 19, "fill root's memory and disk": a memfd or deleted file is
stored as its data extents (SEEK_DATA/SEEK_HOLE), holes stay holes at
restart, and the CONTENTS record's extents are checked by the reader."""

from __future__ import annotations

import os

import pytest
from test_image import build, find, raises, specs
from test_kind_records import kinds_image

from pyckpt.abi import FileKind, FMode, HdrType, lib
from pyckpt.image import Fd, File, Head, Image, Task
from pyckpt.kinds import memfd as mf

PAGE = os.sysconf("SC_PAGE_SIZE")


def _sparse(n_data: int = 64, size: int = 1 << 20, at: tuple[int, ...] = (0,)) -> int:
    fd = os.memfd_create("sparse", 0)
    os.ftruncate(fd, size)
    for off in at:
        os.pwrite(fd, b"D" * n_data, off)
    return fd


def test_memfd_stored_as_its_extents() -> None:
    """64 bytes of data in a 1 MiB memfd, at its start and in its middle:
    a page or so each is stored, not the whole span up to the last byte."""
    fd = _sparse(at=(0, 512 << 10))
    try:
        c = mf.save(fd, os.fstat(fd), mf.DEFAULT_LIMIT, memfd=True)
        assert len(c.data) <= 2 * max(PAGE, 1 << 16)
        assert len(c.data) < 64 << 10, len(c.data)
        assert [off for off, _ in c.extents] == [0, 512 << 10]
        assert sum(n for _, n in c.extents) == len(c.data)
    finally:
        os.close(fd)


def test_64_sparse_memfds_make_a_small_image() -> None:
    """The issue's case: 64 memfds, 64 bytes of data each, 1 MiB long."""
    files, fds = {}, []
    for i in range(1, 65):
        fd = _sparse(at=((1 << 20) - 64,))  # its last 64 bytes
        try:
            st = os.fstat(fd)
            c = mf.save(fd, st, mf.DEFAULT_LIMIT, memfd=True)
        finally:
            os.close(fd)
        files[i] = File(
            i,
            FileKind.MEMFD,
            os.O_RDWR,
            FMode.READ | FMode.WRITE,
            path=f"m{i}",
            st_mode=st.st_mode,
            st_size=st.st_size,
            extra=c,
        )
        fds.append(Fd(i + 2, i))
    img = Image(
        head=Head(1.0, "Linux", "6.1", "#1", "x86_64"),
        tasks=[Task(10, 1, 10, 10, "t", ["t"], "/", fds)],
        files=files,
    )
    data = img.to_bytes()
    assert len(data) < 64 * 2 * max(PAGE, 4096) + (64 << 10), len(data)
    back = Image.from_bytes(data)
    assert back.files == img.files


def test_holes_stay_holes_at_restart() -> None:
    fd = _sparse(at=(0, 512 << 10))
    try:
        st = os.fstat(fd)
        c = mf.save(fd, st, mf.DEFAULT_LIMIT, memfd=True)
        new = mf.make_memfd("sparse", c, st.st_mode, st.st_size, 0, 0)
        try:
            assert os.fstat(new).st_size == 1 << 20
            assert os.pread(new, 1 << 20, 0) == os.pread(fd, 1 << 20, 0)
            # the hole between the two extents is a hole again
            assert os.lseek(new, PAGE, os.SEEK_DATA) == 512 << 10
            assert os.fstat(new).st_blocks * 512 <= 4 * max(PAGE, 4096)
        finally:
            os.close(new)
    finally:
        os.close(fd)


def test_deleted_file_extents(tmp_path) -> None:
    p = tmp_path / "sparse"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.unlink(p)
        os.pwrite(fd, b"tail", (4 << 20) - 4)
        os.pwrite(fd, b"head", 0)
        st = os.fstat(fd)
        c = mf.save(fd, st, mf.DEFAULT_LIMIT, memfd=False)
        assert len(c.data) < 1 << 20  # not 4 MiB (tmpfs or ext4: holes)
        new = mf.make_deleted(str(p), c, st.st_mode, st.st_size, 0, 0)
        try:
            assert os.pread(new, 4, 0) == b"head"
            assert os.pread(new, 4, (4 << 20) - 4) == b"tail"
            assert os.pread(new, 8, 2 << 20) == bytes(8)
        finally:
            os.close(new)
    finally:
        os.close(fd)


def test_limit_counts_stored_bytes_only() -> None:
    """The per-file limit is on the bytes stored, not the file's length."""
    fd = _sparse(at=(0, 900 << 10))
    try:
        c = mf.save(fd, os.fstat(fd), 4 * max(PAGE, 1 << 16), memfd=True)
        assert len(c.extents) == 2
    finally:
        os.close(fd)


def test_contents_without_extents_is_one_at_zero() -> None:
    assert mf.Contents(b"abc").extents == [(0, 3)]
    assert mf.Contents().extents == []


# ---- the record --------------------------------------------------------------


def _two_extents() -> tuple[list, int]:
    """kinds_image's DELETED file (objref 6, 12 bytes) made of two extents."""
    img = kinds_image()
    f = img.files[6]
    f.st_size = 100
    f.extra = mf.Contents(b"twelve bytes", extents=[(0, 4), (50, 8)])
    sp = specs(img.to_bytes())
    assert Image.from_bytes(img.to_bytes()).files[6].extra == f.extra
    return sp, find(sp, HdrType.CONTENTS, objref=6)


def test_extents_round_trip() -> None:
    _two_extents()


@pytest.mark.parametrize(
    ("extents", "fragment"),
    [
        ([(0, 4), (2, 8)], "extent 1 at 2 overlaps"),
        ([(50, 8), (0, 4)], "extent 1 at 0 overlaps"),
        ([(0, 4), (95, 8)], "extent 1 ends at 103, past st_size 100"),
        ([(0, 0), (50, 12)], "extent 0 is empty"),
        ([(0, 4), (50, 9)], "extents hold 13 bytes, data_len is 12"),
        ([(0, 12), (2**64 - 4, 0)], "extent 1 is empty"),
        ([(0, 4), (2**64 - 4, 8)], "past st_size 100"),
    ],
)
def test_bad_extents_refused(extents: list, fragment: str) -> None:
    sp, i = _two_extents()
    sp[i].var["extents"] = [{"offset": o, "len": n} for o, n in extents]
    built, offsets = build(sp)
    raises(built, offsets[i], fragment)


def test_format_3_refused() -> None:
    img = kinds_image()
    img.head.format_version = 3
    with pytest.raises(ValueError, match="format version 3 is refused"):
        img.to_bytes()
    assert lib.CKPT_FORMAT_VERSION == 4
