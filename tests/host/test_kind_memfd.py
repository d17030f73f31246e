"""memfd / deleted-file mechanics on the host (no module)."""

from __future__ import annotations

import fcntl
import mmap
import os
import stat

import pytest
from test_image import build, find, raises, specs
from test_kind_records import _bad, kinds_image

from pyckpt.abi import HdrType
from pyckpt.image import Image
from pyckpt.kinds import memfd as mf


def _link(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def test_memfd_detected_with_its_name() -> None:
    fd = os.memfd_create("a name (deleted) with/slash", 0)
    try:
        link, st = _link(fd), os.fstat(fd)
        assert mf.memfd_name(link) == "a name (deleted) with/slash"
        assert mf.is_memfd(link, st, fd)
        assert not mf.is_deleted(link, st) or mf.is_memfd(link, st, fd)
    finally:
        os.close(fd)


def test_deleted_file_is_not_a_memfd(tmp_path) -> None:
    # a deleted file whose name looks like a memfd's link is still a file
    p = tmp_path / "f"
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        os.unlink(p)
        link, st = _link(fd), os.fstat(fd)
        assert mf.is_deleted(link, st)
        assert mf.deleted_path(link) == str(p)
        assert mf.memfd_name(link) is None
    finally:
        os.close(fd)


def test_memfd_roundtrip_sealed() -> None:
    fd = os.memfd_create("sealed", os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, b"hello world")
        fcntl.fcntl(fd, mf.F_ADD_SEALS, 0x4 | 0x8 | 0x2)  # grow, write, shrink
        os.lseek(fd, 3, os.SEEK_SET)
        st = os.fstat(fd)
        c = mf.save(fd, st, mf.DEFAULT_LIMIT, memfd=True)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 3  # pread: offset unmoved
        assert c.data == b"hello world" and c.seals == 0xE
        new = mf.make_memfd("sealed", c, st.st_mode, st.st_size, st.st_uid, st.st_gid)
        try:
            assert fcntl.fcntl(new, mf.F_GET_SEALS) == 0xE
            assert os.pread(new, 100, 0) == b"hello world"
            assert mf.memfd_name(_link(new)) == "sealed"
            with pytest.raises(PermissionError):
                os.pwrite(new, b"x", 0)  # F_SEAL_WRITE holds
        finally:
            os.close(new)
    finally:
        os.close(fd)


def test_memfd_without_sealing_stays_so() -> None:
    fd = os.memfd_create("plain", 0)
    try:
        os.write(fd, b"abc")
        st = os.fstat(fd)
        c = mf.save(fd, st, mf.DEFAULT_LIMIT, memfd=True)
        assert c.seals == mf.F_SEAL_SEAL
        new = mf.make_memfd("plain", c, st.st_mode, st.st_size, st.st_uid, st.st_gid)
        try:
            assert fcntl.fcntl(new, mf.F_GET_SEALS) == mf.F_SEAL_SEAL
            with pytest.raises(PermissionError):
                fcntl.fcntl(new, mf.F_ADD_SEALS, 0x8)
        finally:
            os.close(new)
    finally:
        os.close(fd)


def test_mapped_memfd_contents_are_the_mapping() -> None:
    fd = os.memfd_create("mapped", 0)
    try:
        os.ftruncate(fd, 8192)
        with mmap.mmap(fd, 8192) as m:
            m[100:105] = b"MAPPD"
            c = mf.save(fd, os.fstat(fd), mf.DEFAULT_LIMIT, memfd=True)
        assert c.data[100:105] == b"MAPPD"
    finally:
        os.close(fd)


def test_trailing_hole_not_stored_and_size_kept() -> None:
    fd = os.memfd_create("sparse", 0)
    try:
        os.pwrite(fd, b"head", 0)
        os.ftruncate(fd, 64 << 20)  # 64 MiB, one page of data
        st = os.fstat(fd)
        c = mf.save(fd, st, mf.DEFAULT_LIMIT, memfd=True)
        assert len(c.data) <= 1 << 16 and c.data.startswith(b"head")
        new = mf.make_memfd("sparse", c, st.st_mode, st.st_size, 0, 0)
        try:
            assert os.fstat(new).st_size == 64 << 20
            assert os.pread(new, 4, 0) == b"head"
            assert os.pread(new, 4, 32 << 20) == bytes(4)
        finally:
            os.close(new)
    finally:
        os.close(fd)


def test_over_the_limit_refused() -> None:
    fd = os.memfd_create("big", 0)
    try:
        os.write(fd, os.urandom(3000))
        with pytest.raises(mf.TooBig, match="3000 bytes.*limit of 2048"):
            mf.save(fd, os.fstat(fd), 2048, memfd=True)
        assert len(mf.save(fd, os.fstat(fd), 4096, memfd=True).data) == 3000
    finally:
        os.close(fd)


def test_deleted_roundtrip(tmp_path) -> None:
    p = tmp_path / "log.txt"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, b"line 1\nline 2\n")
        os.unlink(p)
        st = os.fstat(fd)
        c = mf.save(fd, st, mf.DEFAULT_LIMIT, memfd=False)
        assert c.data == b"line 1\nline 2\n" and c.seals == 0
        new = mf.make_deleted(str(p), c, st.st_mode, st.st_size, st.st_uid, st.st_gid)
        try:
            nst = os.fstat(new)
            assert nst.st_nlink == 0 and stat.S_IMODE(nst.st_mode) == 0o640
            assert nst.st_dev == st.st_dev  # made in the same directory's fs
            assert os.pread(new, 100, 0) == b"line 1\nline 2\n"
            assert os.listdir(tmp_path) == []  # nothing left behind
            assert _link(new) == f"{p} (deleted)"  # its name was free
            # its own open file with the recorded flags
            wr = mf.reopen(new, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(wr, b"line 3\n")
                assert os.pread(new, 100, 0).endswith(b"line 3\n")
                assert fcntl.fcntl(wr, fcntl.F_GETFL) & os.O_APPEND
            finally:
                os.close(wr)
        finally:
            os.close(new)
    finally:
        os.close(fd)


def test_deleted_directory_gone(tmp_path) -> None:
    c = mf.Contents(b"x")
    with pytest.raises(FileNotFoundError):
        mf.make_deleted(str(tmp_path / "gone" / "f"), c, 0o100600, 1, 0, 0)


def test_deleted_name_taken_again(tmp_path) -> None:
    # the name was reused since (a rotated log): never touched, made aside
    p = tmp_path / "app.log"
    p.write_bytes(b"the new file")
    new = mf.make_deleted(str(p), mf.Contents(b"old"), 0o100600, 3, 0, 0)
    try:
        assert p.read_bytes() == b"the new file"
        assert os.fstat(new).st_nlink == 0
        assert os.pread(new, 10, 0) == b"old"
        assert os.listdir(tmp_path) == ["app.log"]
    finally:
        os.close(new)


# ---- the CONTENTS record (moved from test_kind_records.py) -------------------


@pytest.fixture(scope="module")
def data() -> bytes:
    return kinds_image().to_bytes()


@pytest.mark.parametrize(
    ("n", "field", "value", "fragment"),
    [
        (0, "objref", 0, "CONTENTS record: objref 0 <= 0"),
        (0, "seals", 0x40, "CONTENTS record: unknown seals 0x40"),
        (0, "same_as", -2, "same_as -2: not another file"),
        (0, "same_as", 4, "same_as 4: not another file"),
        (1, "same_as", 0, "data_len"),  # no data of its own: fine, see below
        (1, "same_as", 1, "same_as 1 is no earlier MEMFD file"),
        (1, "seals", 1, "same_as 4 with seals or data of its own"),
        (2, "seals", 1, "CONTENTS record: seals on a DELETED file"),
        (0, "objref", 5, "CONTENTS record: objref 5 differs from its FILE's 4"),
    ],
)
def test_contents_refused(
    data: bytes, n: int, field: str, value: int, fragment: str
) -> None:
    if fragment == "data_len":
        # a later file on the inode with same_as 0 and no data is valid
        sp = specs(data)
        i = [j for j, s in enumerate(sp) if s.type == HdrType.CONTENTS][n]
        sp[i].fields[field] = value
        Image.from_bytes(build(sp)[0])
        return
    _bad(data, HdrType.CONTENTS, field, value, fragment, n)


def test_contents_more_data_than_size(data: bytes) -> None:
    sp = specs(data)
    i = find(sp, HdrType.CONTENTS, objref=6)
    sp[i].var["data"] = b"thirteen byte"
    sp[i].var["extents"] = [{"offset": 0, "len": 13}]
    built, offsets = build(sp)
    raises(built, offsets[i], "data_len 13 above its FILE's st_size 12")


def test_same_as_on_another_inode(data: bytes) -> None:
    sp = specs(data)
    i = find(sp, HdrType.FILE, objref=5)
    sp[i].fields["st_ino"] = 100
    built, offsets = build(sp)
    raises(built, offsets[i + 1], "same_as 4 is no earlier MEMFD file")


def test_deleted_path_must_be_absolute(data: bytes) -> None:
    sp = specs(data)
    i = find(sp, HdrType.FILE, objref=6)
    sp[i].var["path"] = b"relative/app.log"
    built, offsets = build(sp)
    raises(built, offsets[i], "DELETED file's path is not absolute")


def test_memfd_name_too_long(data: bytes) -> None:
    sp = specs(data)
    i = find(sp, HdrType.FILE, objref=4)
    sp[i].var["path"] = b"n" * 250
    built, offsets = build(sp)
    raises(built, offsets[i], "MEMFD name above 249 bytes")


def test_restart_limit_on_contents() -> None:
    from pyckpt.errors import RestartError
    from pyckpt.restarter import Limits, _check_limits

    image = kinds_image()  # 11 + 12 bytes of data
    _check_limits(image, Limits(contents_bytes=23))
    with pytest.raises(RestartError, match="23 bytes of file contents.*--max-contents"):
        _check_limits(image, Limits(contents_bytes=22))


@pytest.mark.parametrize(
    ("text", "value"), [("4096", 4096), ("2M", 2 << 20), ("1g", 1 << 30), ("0", 0)]
)
def test_cli_max_file_contents(text: str, value: int) -> None:
    from pyckpt import cli

    args = cli.parse(["checkpoint", "1", "-o", "x.img", "--max-file-contents", text])
    assert cli._options(args).contents_limit == value
    default = cli.parse(["checkpoint", "1", "-o", "x.img"])
    assert cli._options(default).contents_limit == 1 << 20


@pytest.mark.parametrize("text", ["2X", "-1", "2G", "lots"])
def test_cli_max_file_contents_refused(text: str, capsys) -> None:
    from pyckpt import cli

    with pytest.raises(SystemExit):
        cli.parse(["checkpoint", "1", "-o", "x.img", "--max-file-contents", text])
    assert "--max-file-contents" in capsys.readouterr().err
