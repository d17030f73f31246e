"""Image format 2 on the host: credentials and file identity round trip,
format 1 refused, trust in the image file, and the reader's memory bound."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from pyckpt import Error
from pyckpt.abi import FileKind, FMode
from pyckpt.image import (
    Fd,
    File,
    Head,
    Image,
    ImageError,
    Task,
)
from pyckpt.kinds.eventfd import Eventfd
from pyckpt.model import RLIM_INFINITY, RLIM_NLIMITS

RW = FMode.READ | FMode.WRITE


def head() -> Head:
    return Head(1.5, "Linux", "6.1.0-test", "#1", "x86_64")


def cred_image() -> Image:
    rl = [(1024, 4096)] * RLIM_NLIMITS
    rl[3] = (RLIM_INFINITY, RLIM_INFINITY)
    task = Task(
        10,
        1,
        10,
        10,
        "bash",
        ["-bash"],
        "/tmp",
        [Fd(3, 1)],
        ruid=65534,
        euid=65534,
        suid=65534,
        fsuid=65534,
        rgid=65534,
        egid=65534,
        sgid=65534,
        fsgid=65534,
        groups=[4, 24, 65533],
        umask=0o027,
        no_new_privs=True,
        rlimits=rl,
        env=["HOME=/nonexistent", "X=a b", "EMPTY="],
        exe="/usr/bin/bash",
    )
    f = File(
        1,
        FileKind.REG,
        os.O_RDONLY,
        FMode.READ,
        pos=7,
        path="/etc/hostname",
        st_dev=0x803,
        st_ino=1234567890123,
        st_mode=0o100644,
        st_uid=0,
        st_gid=0,
        st_size=12,
    )
    return Image(head=head(), tasks=[task], files={1: f})


def test_credentials_round_trip() -> None:
    img = cred_image()
    back = Image.from_bytes(img.to_bytes())
    assert back.tasks == img.tasks
    assert back.files == img.files
    t = back.tasks[0]
    assert (t.ruid, t.egid, t.groups, t.umask) == (65534, 65534, [4, 24, 65533], 0o027)
    assert t.rlimits is not None and t.rlimits[3] == (RLIM_INFINITY, RLIM_INFINITY)
    assert t.no_new_privs and t.exe == "/usr/bin/bash" and t.root == "/"


def test_no_rlimits_stays_none() -> None:
    img = cred_image()
    img.tasks[0].rlimits = None
    assert Image.from_bytes(img.to_bytes()).tasks[0].rlimits is None


def test_bad_credentials_refused_by_the_writer() -> None:
    img = cred_image()
    img.tasks[0].umask = 0o1777
    with pytest.raises(ValueError, match="umask"):
        img.to_bytes()
    img = cred_image()
    img.tasks[0].rlimits = [(5, 4)] * RLIM_NLIMITS
    with pytest.raises(ValueError, match="soft 5 above hard 4"):
        img.to_bytes()
    img = cred_image()
    img.tasks[0].rlimits = [(1, 1)]
    with pytest.raises(ValueError, match="rlimits"):
        img.to_bytes()


def test_exception_root() -> None:
    """Every error of the API sits under pyckpt.Error, with an errno."""
    import pyckpt

    for cls in (
        pyckpt.CkptError,
        pyckpt.CheckpointError,
        pyckpt.RestartError,
        pyckpt.ImageError,
        pyckpt.DeviceMissingError,
    ):
        assert issubclass(cls, Error), cls
    assert issubclass(pyckpt.ImageError, ValueError)  # as before
    assert issubclass(pyckpt.CkptError, OSError)
    assert pyckpt.RestartError("x", errno=5).errno == 5
    assert pyckpt.CheckpointError("x").errno == 0
    with pytest.raises(Error):
        Image.from_bytes(b"junk")


# ---- trust ---------------------------------------------------------------------


def saved(tmp_path: Path) -> Path:
    p = tmp_path / "t.img"
    cred_image().save(p)
    return p


def test_load_own_private_image(tmp_path: Path) -> None:
    p = saved(tmp_path)
    assert os.stat(p).st_mode & 0o777 == 0o600
    assert Image.load(p).tasks[0].exe == "/usr/bin/bash"


@pytest.mark.parametrize(
    "mode,who", [(0o620, "its group"), (0o602, "others"), (0o666, "group and others")]
)
def test_load_refuses_writable_image(tmp_path: Path, mode: int, who: str) -> None:
    p = saved(tmp_path)
    os.chmod(p, mode)
    with pytest.raises(ImageError) as ei:
        Image.load(p)
    msg = str(ei.value)
    assert f"writable by {who}" in msg and f"mode {mode:04o}" in msg
    assert f"owner uid {os.geteuid()}" in msg and "--trust-image" in msg
    assert Image.load(p, trust=True).tasks  # the override


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_load_refuses_foreign_owner(tmp_path: Path) -> None:
    p = saved(tmp_path)
    os.chown(p, 65534, 65534)
    with pytest.raises(ImageError, match="owned by uid 65534, neither root"):
        Image.load(p)


def test_load_refuses_foreign_owner_unprivileged(tmp_path: Path) -> None:
    """As a non-root caller, a root-owned image is trusted, any other owner
    not: checked by the function itself with a made-up stat."""
    from pyckpt.image import check_trusted

    st = os.stat_result((0o100600, 0, 0, 1, os.geteuid() + 1, 0, 0, 0, 0, 0))
    if os.geteuid() + 1 != 0:
        with pytest.raises(ImageError, match=f"owned by uid {os.geteuid() + 1}"):
            check_trusted(st, "x.img")
    check_trusted(os.stat_result((0o100644, 0, 0, 1, 0, 0, 0, 0, 0, 0)), "x.img")
    with pytest.raises(ImageError, match="not a regular file"):
        check_trusted(os.stat_result((0o010600, 0, 0, 1, 0, 0, 0, 0, 0, 0)), "x")


# ---- bounds on the whole image ----------------------------------------------------


def test_many_fds_memory_is_linear() -> None:
    """Many small records (FD + OBJREF): the model stays a small multiple."""
    files = {1: File(1, FileKind.EVENTFD, os.O_RDWR, RW, extra=Eventfd())}
    tasks = [
        Task(
            10 + t,
            10 if t else 1,
            10,
            10,
            "t",
            ["t"],
            "/",
            [Fd(i, 1) for i in range(2000)],
        )
        for t in range(20)
    ]
    data = Image(head=head(), tasks=tasks, files=files).to_bytes()
    tracemalloc.start()
    try:
        Image.from_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(data), f"peak {peak} for {len(data)}"


# ---- the path: opened without following or blocking, its directories checked --


def _load_in_child(path: Path, trust: bool = False) -> str:
    """Image.load(path) in a child process: what it raised ("" if nothing).
    A child, so that a load that blocks (a FIFO opened for reading) fails
    this test through the timeout instead of hanging the run."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pyckpt.image import Image, ImageError\n"
        "try:\n"
        f"    Image.load({str(path)!r}, trust={trust})\n"
        "except ImageError as e:\n"
        "    print('ImageError:', e)\n"
    )
    try:
        r = subprocess.run(
            [sys.executable, "-c", code],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"Image.load({path}) blocked")
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("trust", [False, True])
def test_load_fifo_does_not_block(tmp_path: Path, trust: bool) -> None:
    p = tmp_path / "t.img"
    os.mkfifo(p, 0o600)
    out = _load_in_child(p, trust)
    assert "ImageError" in out and str(p) in out and "not a regular file" in out


@pytest.mark.parametrize("trust", [False, True])
def test_load_refuses_symlink(tmp_path: Path, trust: bool) -> None:
    """A link to another (valid, root-owned) image is never followed."""
    real = saved(tmp_path)
    link = tmp_path / "link.img"
    link.symlink_to(real)
    with pytest.raises(ImageError) as ei:
        Image.load(link, trust=trust)
    assert str(link) in str(ei.value) and "symbolic link" in str(ei.value)


def test_load_refuses_device(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="/dev/null.*not a regular file"):
        Image.load("/dev/null", trust=True)


def _nest(tmp_path: Path) -> tuple[Path, Path]:
    d = tmp_path / "a" / "b"
    d.mkdir(parents=True, mode=0o755)
    p = d / "t.img"
    cred_image().save(p)
    return d, p


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
@pytest.mark.parametrize("level", [0, 1])
def test_load_refuses_writable_directory(tmp_path: Path, mode: int, level: int) -> None:
    """The parent or any directory above it writable by group or others."""
    d, p = _nest(tmp_path)
    bad_dir = d if level == 0 else d.parent
    os.chmod(bad_dir, mode)
    with pytest.raises(ImageError) as ei:
        Image.load(p)
    msg = str(ei.value)
    assert str(p) in msg and str(bad_dir) in msg and "writable by" in msg
    assert f"mode {mode:04o}" in msg
    assert Image.load(p, trust=True).tasks  # the override


def test_load_sticky_directory_allowed(tmp_path: Path) -> None:
    d, p = _nest(tmp_path)
    os.chmod(d, 0o1777)
    assert Image.load(p).tasks


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
@pytest.mark.parametrize("level", [0, 1])
def test_load_refuses_foreign_directory(tmp_path: Path, level: int) -> None:
    """A directory of another user: it could swap the image under the name."""
    d, p = _nest(tmp_path)
    bad_dir = d if level == 0 else d.parent
    os.chown(bad_dir, 65534, 65534)
    with pytest.raises(ImageError) as ei:
        Image.load(p)
    msg = str(ei.value)
    assert str(bad_dir) in msg and "owned by uid 65534" in msg
    assert Image.load(p, trust=True).tasks


def test_load_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, p = _nest(tmp_path)
    monkeypatch.chdir(p.parent)
    assert Image.load("t.img").tasks
    os.chmod(p.parent.parent, 0o777)
    with pytest.raises(ImageError, match="writable by"):
        Image.load("t.img")


def test_cli_show_fifo_does_not_block(tmp_path: Path) -> None:
    import subprocess
    import sys

    p = tmp_path / "t.img"
    os.mkfifo(p, 0o600)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "pyckpt", "show", str(p)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("pyckpt show blocked on a FIFO")
    assert r.returncode == 1 and "not a regular file" in r.stderr


# ---- symbolic links before the last component ------------------------------------


def _elsewhere(tmp_path: Path) -> Path:
    """A valid image in a trusted directory of its own."""
    d = tmp_path / "root-images"
    d.mkdir(mode=0o755)
    p = d / "t.img"
    cred_image().save(p)
    return d


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_load_refuses_directory_link_in_foreign_directory(tmp_path: Path) -> None:
    """A user's directory holding a link to a directory of root's images:
    the real directories are all root's, but the user chose which one."""
    target = _elsewhere(tmp_path)
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    (home / "imgs").symlink_to(target)
    os.chown(home, 65534, 65534)
    with pytest.raises(ImageError) as ei:
        Image.load(home / "imgs" / "t.img")
    msg = str(ei.value)
    assert str(home) in msg and "owned by uid 65534" in msg
    assert Image.load(home / "imgs" / "t.img", trust=True).tasks


@pytest.mark.skipif(os.geteuid() != 0, reason="lchown to another user needs root")
def test_load_refuses_foreign_link_in_sticky_directory(tmp_path: Path) -> None:
    target = _elsewhere(tmp_path)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    (sticky / "imgs").symlink_to(target)
    os.lchown(sticky / "imgs", 65534, 65534)
    with pytest.raises(ImageError) as ei:
        Image.load(sticky / "imgs" / "t.img")
    msg = str(ei.value)
    assert "symbolic link owned by uid 65534" in msg and str(sticky / "imgs") in msg


def test_load_follows_trusted_directory_links(tmp_path: Path) -> None:
    """Links placed by root or the caller in trusted directories (/var/run
    -> /run) are fine, relative and absolute, and through .."""
    target = _elsewhere(tmp_path)
    (tmp_path / "abs").symlink_to(target)
    (tmp_path / "rel").symlink_to("root-images")
    (tmp_path / "sub").mkdir(mode=0o755)
    for p in (
        tmp_path / "abs" / "t.img",
        tmp_path / "rel" / "t.img",
        tmp_path / "sub" / ".." / "rel" / "t.img",
    ):
        assert Image.load(p).tasks, p
