"""The chrdev kind (pyckpt/kinds/chrdev.py): stateless character devices,
and those the user names with --device, saved as path and device number and
reopened by path only once that number is checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hosthelpers import Collector, LocalRef, Objects, Options, Plan, fd_flags
from test_image import patch, raises

from pyckpt.abi import FileKind, FMode, HdrType, lib
from pyckpt.errors import RestartError
from pyckpt.image import Fd, File, Head, Image, Task, iter_records
from pyckpt.kinds import chrdev
from pyckpt.kinds.chrdev import Device
from pyckpt.show import summary

KIND = chrdev.KIND
RW = FMode.READ | FMode.WRITE
NULL = os.makedev(1, 3)
ZERO = os.makedev(1, 5)


def chr_file(objref: int, path: str, rdev: int, user: bool = False) -> File:
    return File(
        objref,
        FileKind.CHR,
        os.O_RDWR,
        RW,
        path=path,
        st_rdev=rdev,
        extra=Device(user=True) if user else None,
    )


def image_of(*files: File) -> Image:
    fds = [Fd(i, f.objref) for i, f in enumerate(files)]
    return Image(
        head=Head(1.0, "Linux", "6.12", "#1", "x86_64"),
        tasks=[Task(5, 1, 5, 5, "t", ["t"], "/", fds)],
        files={f.objref: f for f in files},
    )


class Opened:
    """An fd on a device path, for the duration of a with block."""

    def __init__(self, path: str, flags: int = os.O_RDONLY) -> None:
        self.fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOCTTY)

    def __enter__(self) -> LocalRef:
        return LocalRef(self.fd)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


# ---- which devices -------------------------------------------------------------


def test_the_table_is_the_devices_txt_numbers() -> None:
    for path, (major, minor) in chrdev.STATELESS.items():
        st = os.stat(path)
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (major, minor), path
        assert chrdev.is_stateless(path, st.st_rdev)
    assert not chrdev.is_stateless("/dev/null", ZERO)  # another number
    assert not chrdev.is_stateless("/dev/null2", NULL)  # another path
    assert chrdev.rdev_name(os.makedev(136, 3)) == "136:3"


def test_claims_only_stateless_devices() -> None:
    with Opened("/dev/null") as r:
        assert KIND.claims(FileKind.CHR, r)  # type: ignore[arg-type]
    with Opened("/dev/urandom") as r:
        assert KIND.claims(FileKind.CHR, r)  # type: ignore[arg-type]
    master, slave = os.openpty()
    try:
        # a terminal is the tty kind's
        assert not KIND.claims(FileKind.CHR, LocalRef(slave))  # type: ignore[arg-type]
    finally:
        os.close(master)
        os.close(slave)
    assert KIND.reported == frozenset({FileKind.CHR}) and KIND.shared_outside


def test_refusal_says_how_to_save_it() -> None:
    why = chrdev.refusal("/dev/x", NULL)
    assert why.startswith("character device /dev/x (rdev 1:3): not a terminal")
    assert why.endswith("--device PATH saves it as one")


# ---- checkpoint ----------------------------------------------------------------


@pytest.mark.parametrize("user", [False, True])
def test_save_records_path_rdev_and_node(user: bool) -> None:
    f = File(1, FileKind.CHR, os.O_RDWR, RW)
    with Opened("/dev/zero") as r:
        assert chrdev.save(f, r, user=user) == ""  # type: ignore[arg-type]
    node = os.stat("/dev/zero")
    assert (f.kind, f.path, f.st_rdev) == (FileKind.CHR, "/dev/zero", ZERO)
    assert (f.st_dev, f.st_ino, f.st_mode) == (node.st_dev, node.st_ino, node.st_mode)
    assert (f.st_uid, f.st_gid) == (node.st_uid, node.st_gid)
    assert chrdev.named_by_user(f) is user
    assert f.extra == (Device(user=True) if user else None)


def test_save_refuses_a_device_not_at_its_path(tmp_path: Path) -> None:
    (tmp_path / "zero").write_bytes(b"")  # a path, no device there

    for link in (str(tmp_path / "zero"), str(tmp_path / "none"), "null"):

        class Moved(LocalRef):
            pass

        Moved.link = link  # type: ignore[assignment]
        f = File(1, FileKind.CHR, os.O_RDWR, RW)
        with Opened("/dev/zero") as r:
            why = chrdev.save(f, Moved(r.fd), user=False)  # type: ignore[arg-type]
        assert why == (
            f"character device {link} (rdev 1:5): not reachable at its path "
            "(another mount namespace or a removed node)"
        )
        assert f.kind == FileKind.CHR and f.path == ""  # nothing recorded


def test_save_refuses_another_device_at_the_path() -> None:
    class Swapped(LocalRef):
        link = "/dev/null"  # /dev/zero's fd, but /dev/null at the path

    with Opened("/dev/zero") as r:
        why = chrdev.save(File(1, FileKind.CHR, 0, RW), Swapped(r.fd), user=False)  # type: ignore[arg-type]
    assert "character device /dev/null (rdev 1:5): not reachable" in why


def test_checkpoint_refusal_names_the_kind(tmp_path: Path) -> None:
    class Moved(LocalRef):
        link = str(tmp_path / "gone")

    col = Collector()
    with Opened("/dev/null") as r:
        f = File(1, FileKind.CHR, os.O_RDWR, RW)
        assert not KIND.checkpoint(col, f, Moved(r.fd))  # type: ignore[arg-type]
        assert KIND.checkpoint(col, File(2, FileKind.CHR, 0, RW), r)  # type: ignore[arg-type]
    assert len(col.problems) == 1
    assert f"fd {r.fd}: chrdev: character device {tmp_path}/gone" in col.problems[0]


def test_user_device_and_check_devices(tmp_path: Path) -> None:
    st = os.stat("/dev/null")
    assert chrdev.user_device("/dev/./null", st, ["/dev/null"])
    assert not chrdev.user_device("/dev/null", st, ["/dev/zero"])
    assert not chrdev.user_device("/etc/hosts", os.stat("/etc/hosts"), ["/etc/hosts"])
    chrdev.check_devices(["/dev/null", "/dev/zero"])
    (tmp_path / "f").write_bytes(b"")
    os.symlink("/dev/null", tmp_path / "link")
    for path, why in (
        ("dev/null", "not an absolute path"),
        (str(tmp_path / "none"), "No such file"),
        (str(tmp_path / "f"), "not a character device"),
        (str(tmp_path / "link"), "not a character device"),  # not followed
    ):
        with pytest.raises(ValueError, match=f"--device {path}: {why}"):
            chrdev.check_devices(["/dev/null", path])


# ---- the image and show --------------------------------------------------------


def test_round_trip_and_show() -> None:
    files = (chr_file(1, "/dev/null", NULL), chr_file(2, "/dev/ttyS0", 0x440, True))
    data = image_of(*files).to_bytes()
    again = Image.from_bytes(data)
    assert again.files == {f.objref: f for f in files}
    assert again.to_bytes() == data
    recs = [r for r in iter_records(data) if r.type == HdrType.FILE]
    assert [r.fields["flags"] & lib.CKPT_FILE_USER_DEVICE for r in recs] == [
        0,
        lib.CKPT_FILE_USER_DEVICE,
    ]
    assert [r.fields["st_rdev"] for r in recs] == [NULL, 0x440]
    assert KIND.describe(files[0]) == "chr /dev/null rdev 1:3"
    assert KIND.describe(files[1]) == "chr /dev/ttyS0 rdev 4:64 (--device)"
    text = summary(again)
    assert "  fd 1 -> objref 2 chr /dev/ttyS0 rdev 4:64 (--device) read+write" in text


def test_user_device_only_on_a_chr_file() -> None:
    reg = File(2, FileKind.REG, 0, FMode.READ, path="/x")
    data = image_of(chr_file(1, "/dev/null", NULL), reg).to_bytes()
    rec = [r for r in iter_records(data) if r.type == HdrType.FILE][1]
    bad = patch(data, rec, "flags", lib.CKPT_FILE_USER_DEVICE)
    raises(bad, rec.offset, "FILE record: USER_DEVICE on a REG file")
    assert KIND.file_flags == (("USER_DEVICE", lib.CKPT_FILE_USER_DEVICE),)
    assert KIND.file_fields(chr_file(1, "/dev/null", NULL)) == {}


# ---- restart -------------------------------------------------------------------


def test_check() -> None:
    null = chr_file(1, "/dev/null", NULL)
    KIND.check([null], Plan(image_of(null)))  # type: ignore[arg-type]
    serial = chr_file(2, "/dev/ttyS0", 0x440, user=True)
    # a --device at checkpoint is reopened only if named again
    with pytest.raises(RestartError) as e:
        KIND.check([null, serial], Plan(image_of(null, serial)))  # type: ignore[arg-type]
    assert str(e.value) == (
        "objref 2: /dev/ttyS0 (rdev 4:64): a device named with --device at "
        "checkpoint is reopened only when restart is given --device /dev/ttyS0 too"
    )
    named = Plan(image_of(null, serial), opts=Options(devices=["/dev//ttyS0"]))
    KIND.check([null, serial], named)  # type: ignore[arg-type]
    # an image alone opens no other device, whatever its path
    for f in (chr_file(3, "/dev/null", ZERO), chr_file(3, "/dev/sda", NULL)):
        with pytest.raises(RestartError, match="not one of the stateless devices"):
            KIND.check([f], named)  # type: ignore[arg-type]
    with pytest.raises(RestartError, match=r"objref 4: no absolute path \('null'\)"):
        KIND.check([chr_file(4, "null", NULL)], named)  # type: ignore[arg-type]


def test_chrdev_table_and_reopen(tmp_path: pytest.TempPathFactory) -> None:
    # moved from test_kind_tty.py
    for path in ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom"):
        st = os.stat(path)
        assert chrdev.is_stateless(path, st.st_rdev)
        fd = chrdev.reopen(3, path, st.st_rdev, os.O_RDWR)
        try:
            assert os.fstat(fd).st_rdev == st.st_rdev
            assert fcntl_flags(fd) & os.O_NONBLOCK == 0  # not recorded
        finally:
            os.close(fd)
    null = os.stat("/dev/null").st_rdev
    assert not chrdev.is_stateless("/dev/zero", null)
    with pytest.raises(RestartError, match=r"rdev 1:5, recorded rdev 1:3"):
        chrdev.reopen(3, "/dev/zero", null, os.O_RDONLY)
    link = str(tmp_path) + "/null"  # type: ignore[operator]
    os.symlink("/dev/null", link)
    with pytest.raises(RestartError, match="not a character device"):
        chrdev.reopen(3, link, null, os.O_RDONLY)
    assert "rdev 1:3" in chrdev.refusal("/dev/x", null)


def fcntl_flags(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL)


def test_reopen_flags(tmp_path: Path) -> None:
    flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_CREAT | os.O_TRUNC
    fd = chrdev.reopen(1, "/dev/null", NULL, flags)
    try:
        got = fd_flags(fd)
        assert got & os.O_ACCMODE == os.O_WRONLY
        assert got & os.O_APPEND and got & os.O_NONBLOCK  # recorded: kept
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)
    with pytest.raises(RestartError, match="objref 5: /dev/nowhere: cannot reopen"):
        chrdev.reopen(5, "/dev/nowhere", NULL, os.O_RDONLY)
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(RestartError, match="not a character device, recorded rdev"):
        chrdev.reopen(6, str(tmp_path / "f"), NULL, os.O_RDONLY)


def test_restore_each_device_one_object() -> None:
    files = [chr_file(1, "/dev/null", NULL), chr_file(2, "/dev/zero", ZERO)]
    files[1].f_flags = os.O_RDONLY
    objs = Objects()
    try:
        KIND.restore(objs, files, Plan(image_of(*files)))  # type: ignore[arg-type]
        got = objs.inserted
        assert objs.objects == [[1], [2]]
        assert sorted(objs.kept) == sorted(got.values())
        assert os.fstat(got[1]).st_rdev == NULL
        assert os.read(got[2], 4) == bytes(4)
        assert fd_flags(got[2]) & os.O_ACCMODE == os.O_RDONLY
    finally:
        objs.close()
