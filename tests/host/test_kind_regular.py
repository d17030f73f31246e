"""The regular kind (pyckpt/kinds/regular.py): regular files and directories
saved as their path and identity, reopened by path only once the identity
is checked (FIFOs and devices reuse both halves)."""

from __future__ import annotations

import os
import resource
import stat
from pathlib import Path

import pytest
from hosthelpers import Collector, LocalRef, Objects, Plan, fd_flags, in_child

from pyckpt import names
from pyckpt.abi import FileKind, FMode, HdrType
from pyckpt.errors import RestartError
from pyckpt.image import Fd, File, Head, Image, Task, iter_records
from pyckpt.kinds import regular
from pyckpt.show import summary

KIND = regular.KIND
RW = FMode.READ | FMode.WRITE


def saved(path: Path, flags: int = os.O_RDWR, objref: int = 1) -> File:
    """A File as checkpoint records the file at path now."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        kind = FileKind.DIR if path.is_dir() else FileKind.REG
        f = File(objref, kind, flags, RW)
        assert regular.record_path(Collector(), f, LocalRef(fd)) == ""  # type: ignore[arg-type]
        return f
    finally:
        os.close(fd)


def image_of(*files: File) -> Image:
    fds = [Fd(i, f.objref) for i, f in enumerate(files)]
    return Image(
        head=Head(1.0, "Linux", "6.12", "#1", "x86_64"),
        tasks=[Task(5, 1, 5, 5, "t", ["t"], "/", fds)],
        files={f.objref: f for f in files},
    )


# ---- checkpoint ----------------------------------------------------------------


def test_record_path_keeps_path_and_identity(tmp_path: Path) -> None:
    p = tmp_path / "data"
    p.write_bytes(b"12345")
    os.chmod(p, 0o640)
    f = saved(p)
    st = os.stat(p)
    assert f.path == str(p)
    assert (f.st_dev, f.st_ino, f.st_mode) == (st.st_dev, st.st_ino, st.st_mode)
    assert (f.st_uid, f.st_gid, f.st_size) == (st.st_uid, st.st_gid, 5)
    d = saved(tmp_path)
    assert d.path == str(tmp_path) and stat.S_ISDIR(d.st_mode)


def test_record_path_refuses_a_deleted_file(tmp_path: Path) -> None:
    p = tmp_path / "gone"
    p.write_bytes(b"x")
    fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.unlink(p)
        f = File(1, FileKind.REG, os.O_RDONLY, FMode.READ)
        why = regular.record_path(Collector(), f, LocalRef(fd))  # type: ignore[arg-type]
        assert why == f"{p} (deleted): the file was deleted"
        assert f.path == "" and f.st_ino == 0  # nothing half-recorded
    finally:
        os.close(fd)


def test_record_path_refuses_a_path_now_naming_another_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"old")
    fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # moved after /proc named it, another file made at its path
        os.rename(p, tmp_path / "moved")
        p.write_bytes(b"another")

        class Raced(LocalRef):
            link = str(p)  # what /proc said before the move

        f = File(1, FileKind.REG, os.O_RDONLY, FMode.READ)
        why = regular.record_path(Collector(), f, Raced(fd))  # type: ignore[arg-type]
        assert why == (
            f"{p}: not reachable at its path (moved, replaced or in another "
            "mount namespace)"
        )
        assert f.path == "" and f.st_ino == 0
        # replaced by rename: the old inode is unlinked, its link says so
        (tmp_path / "new").write_bytes(b"new")
        os.rename(tmp_path / "new", tmp_path / "moved")
        why = regular.record_path(Collector(), f, LocalRef(fd))  # type: ignore[arg-type]
        assert why == f"{tmp_path / 'moved'} (deleted): the file was deleted"
    finally:
        os.close(fd)
    # a link that is no path at all (another mount namespace's file)
    fd = os.open(tmp_path / "moved", os.O_RDONLY | os.O_CLOEXEC)
    try:

        class Elsewhere(LocalRef):
            link = "moved"

        f = File(1, FileKind.REG, os.O_RDONLY, FMode.READ)
        why = regular.record_path(Collector(), f, Elsewhere(fd))  # type: ignore[arg-type]
        assert "moved: not reachable at its path" in why
    finally:
        os.close(fd)


def test_checkpoint_refusal_names_the_kind(tmp_path: Path) -> None:
    p = tmp_path / "gone"
    p.write_bytes(b"x")
    fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.unlink(p)
        col = Collector()
        f = File(1, FileKind.REG, os.O_RDONLY, FMode.READ)
        assert not KIND.checkpoint(col, f, LocalRef(fd))  # type: ignore[arg-type]
        assert len(col.problems) == 1
        assert (
            f"fd {fd}: regular: {p} (deleted): the file was deleted" in col.problems[0]
        )
    finally:
        os.close(fd)
    d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        f = File(2, FileKind.DIR, os.O_RDONLY, FMode.READ)
        assert KIND.checkpoint(col, f, LocalRef(d))  # type: ignore[arg-type]
        assert f.path == str(tmp_path) and len(col.problems) == 1
    finally:
        os.close(d)


# ---- the image and show --------------------------------------------------------


def test_round_trip_and_show() -> None:
    files = (
        File(
            1,
            FileKind.REG,
            os.O_RDWR | os.O_APPEND,
            RW,
            pos=4096,
            path="/tmp/a\udcff",
            st_dev=0x803,
            st_ino=12,
            st_mode=0o100644,
            st_uid=1000,
            st_gid=100,
            st_size=5000,
        ),
        File(2, FileKind.DIR, os.O_RDONLY | os.O_DIRECTORY, FMode.READ, path="/"),
    )
    data = image_of(*files).to_bytes()
    again = Image.from_bytes(data)
    assert again.files == {f.objref: f for f in files}
    assert again.to_bytes() == data
    rec = next(r for r in iter_records(data) if r.type == HdrType.FILE)
    assert rec.fields["path"] == b"/tmp/a\xff"  # the bytes, not UTF-8
    assert (rec.fields["st_ino"], rec.fields["st_size"]) == (12, 5000)
    assert KIND.describe(files[0]) == "reg /tmp/a\udcff"
    assert KIND.describe(files[1]) == "dir /"
    text = summary(again)
    assert "  fd 0 -> objref 1 reg /tmp/a\\xff read+write O_RDWR|O_APPEND" in text
    assert KIND.records == () and KIND.details(again) == []


# ---- restart: checks -------------------------------------------------------------


def test_check_path() -> None:
    ok = File(1, FileKind.REG, 0, FMode.READ, path="/etc/hosts", st_mode=0o100644)
    regular.check_path(ok)
    KIND.check([ok], Plan(image_of(ok)))  # type: ignore[arg-type]
    rel = File(2, FileKind.REG, 0, FMode.READ, path="etc/hosts", st_mode=0o100644)
    with pytest.raises(RestartError, match=r"objref 2: no absolute path \('etc/hosts'"):
        KIND.check([ok, rel], Plan(image_of(ok, rel)))  # type: ignore[arg-type]
    # a type the image did not record: never reopened unchecked
    for kind, mode in ((FileKind.REG, 0), (FileKind.DIR, 0o100644)):
        f = File(3, kind, 0, FMode.READ, path="/x", st_mode=mode)
        with pytest.raises(RestartError, match="records no matching file type"):
            regular.check_path(f)


@pytest.mark.parametrize(
    ("mode", "name"),
    [
        (0o100644, "regular file"),
        (0o040755, "directory"),
        (0o010600, "FIFO"),
        (0o120777, "symbolic link"),
        (0o020666, "character device"),
        (0o060660, "block device"),
        (0o140755, "socket"),
        (0o7, "mode 0o7"),
    ],
)
def test_type_name(mode: int, name: str) -> None:
    assert names.type_name(mode) == name


# ---- restart: open_verified ------------------------------------------------------


def test_open_verified_reopens_the_same_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"keep me")
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_EXCL
    f = saved(p, flags)
    fd = regular.open_verified(f, flags, relocate=False)
    try:
        assert p.read_bytes() == b"keep me"  # O_TRUNC dropped, O_EXCL too
        got = fd_flags(fd)
        assert got & os.O_APPEND and got & os.O_ACCMODE == os.O_RDWR
        assert not got & os.O_NONBLOCK  # opened non-blocking, then cleared
        assert not os.get_inheritable(fd)
        assert os.fstat(fd).st_ino == f.st_ino
    finally:
        os.close(fd)
    f.f_flags = os.O_RDONLY | os.O_NONBLOCK  # recorded: kept
    fd = regular.open_verified(f, f.f_flags, relocate=False)
    try:
        assert fd_flags(fd) & os.O_NONBLOCK
    finally:
        os.close(fd)


def test_open_verified_refuses_a_symlink(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x")
    f = saved(p)
    os.rename(p, tmp_path / "target")
    os.symlink(tmp_path / "target", p)
    # O_PATH|O_NOFOLLOW opens the link itself: its type is refused
    with pytest.raises(RestartError) as e:
        regular.open_verified(f, os.O_RDONLY, relocate=False)
    assert str(e.value).startswith(
        f"objref 1: {p}: not the file that was checkpointed: type symbolic link, "
        "recorded regular file; device/inode"
    )
    with pytest.raises(RestartError, match="type symbolic link, recorded regular"):
        regular.open_verified(f, os.O_RDONLY, relocate=True)  # never followed


def test_open_verified_refuses_another_inode(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"old")
    f = saved(p)
    os.rename(p, tmp_path / "old")  # kept: its inode number is not reused
    p.write_bytes(b"new")
    with pytest.raises(RestartError) as e:
        regular.open_verified(f, os.O_RDONLY, relocate=False)
    assert f"objref 1: {p}: not the file that was checkpointed: device/inode" in str(
        e.value
    )
    assert "(another file: --relocate allows it)" in str(e.value)
    fd = regular.open_verified(f, os.O_RDONLY, relocate=True)
    try:
        assert os.pread(fd, 3, 0) == b"new"
    finally:
        os.close(fd)


def test_open_verified_refuses_another_type_or_owner(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x")
    f = saved(p)
    os.unlink(p)
    os.mkdir(p)
    with pytest.raises(RestartError, match="type directory, recorded regular file"):
        regular.open_verified(f, os.O_RDONLY, relocate=True)
    os.rmdir(p)
    os.mkfifo(p)
    # a FIFO at a file's path: refused before any open that could block
    with pytest.raises(RestartError, match="type FIFO, recorded regular file"):
        regular.open_verified(f, os.O_RDONLY, relocate=True)
    os.unlink(p)
    p.write_bytes(b"x")
    g = saved(p)
    g.st_uid += 1
    with pytest.raises(RestartError, match=f"owner {f.st_uid}:{f.st_gid}, recorded"):
        regular.open_verified(g, os.O_RDONLY, relocate=True)


def test_open_verified_missing(tmp_path: Path) -> None:
    f = File(4, FileKind.REG, 0, FMode.READ, path=str(tmp_path / "no"))
    with pytest.raises(RestartError, match="objref 4: cannot reopen .*No such file"):
        regular.open_verified(f, os.O_RDONLY, relocate=False)


# ---- restart: restore ------------------------------------------------------------


def test_restore_offset_directory_and_short_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")
    f = saved(p, os.O_RDONLY, objref=1)
    f.pos = 4
    short = saved(p, os.O_WRONLY | os.O_APPEND, objref=2)
    short.pos = 20  # the file shrank since
    d = saved(tmp_path, os.O_RDONLY, objref=3)
    plan = Plan(image_of(f, short, d))
    objs = Objects()
    try:
        KIND.restore(objs, [f, short, d], plan)  # type: ignore[arg-type]
        got = objs.inserted
        assert sorted(got) == [1, 2, 3] and sorted(objs.kept) == sorted(got.values())
        assert os.read(got[1], 3) == b"456"
        assert fd_flags(got[2]) & os.O_APPEND
        assert os.lseek(got[2], 0, os.SEEK_CUR) == 20
        assert plan.warnings == [
            f"objref 2: {p} is now 10 bytes, shorter than its saved offset 20"
        ]
        assert stat.S_ISDIR(os.fstat(got[3]).st_mode)
        assert os.listdir(got[3]) == ["f"]
    finally:
        objs.close()


def test_restore_refusal_keeps_what_was_made(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x")
    ok = saved(p, os.O_RDONLY, objref=1)
    gone = saved(p, os.O_RDONLY, objref=2)
    gone.path = str(tmp_path / "missing")
    objs = Objects()
    try:
        with pytest.raises(RestartError, match="objref 2: cannot reopen"):
            KIND.restore(objs, [ok, gone], Plan(image_of(ok, gone)))  # type: ignore[arg-type]
        assert list(objs.inserted) == [1] and len(objs.kept) == 1
    finally:
        objs.close()


class _Flushing(Objects):
    """As restart's objhash: done() hands what was made over and closes the
    coordinator's fds on it once more than a few are held."""

    def done(self) -> None:
        super().done()
        if len(self.kept) > 8:
            self.close()


def test_restore_hands_each_file_over(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x")
    files = [saved(p, os.O_RDONLY, objref=i) for i in range(1, 201)]

    def body() -> int:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        objs = _Flushing()
        try:
            KIND.restore(objs, files, Plan(image_of(*files)))  # type: ignore[arg-type]
        except RestartError:
            return 1
        return 0 if objs.objects == [[i] for i in range(1, 201)] else 2

    assert in_child(body) == 0
