"""Restart acts for a task with that task's rights (issue 19, "paths and
makers"): a tree of uid 65534 is checkpointed by root, killed, then "the
user" (a forked child that took uid 65534) changes what it owns, then root
restarts with the defaults.  Restart either refuses or gives nothing away:
no path walked as root through the user's directories, no object whose
kernel state records its maker (a socket's peer credentials) made as root.

Root's own trees keep working as before: the round trips elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from trees import Member, Tree, in_child, spawn

import pyckpt
from pyckpt.errors import RestartError
from pyckpt.image import Image
from pyckpt.restarter import Restarted
from pyckpt.syscalls import pidfd_getfd

NOBODY = 65534
SO_PASSCRED = 16
SO_PEERCRED = 17
SCM_CREDENTIALS = 2


def become_user() -> None:
    """This process takes uid/gid 65534, no groups: no capability left."""
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)


def as_user(fn: Callable[[], None]) -> None:
    """Run fn as the user, in a forked child; it must succeed."""

    def child() -> int:
        become_user()
        fn()
        return 0

    assert in_child(child) == 0, "the user's step failed"


@dataclass
class Dirs:
    base: Path  # root's, 0755: every path below is reachable by the user
    home: Path  # the user's, 0755: the user may replace what is in it
    secret: Path  # root's, 0700: the user cannot enter it
    rootdir: Path  # root's, 0755: the user cannot write in it

    def swap_for_link(self, name: str, target: Path) -> None:
        """As the user: home/name becomes a symlink to target."""
        here = self.home / name

        def step() -> None:
            os.rename(here, self.home / f"{name}.old")
            os.symlink(target, here)

        as_user(step)


@pytest.fixture
def dirs() -> Iterator[Dirs]:
    base = Path(tempfile.mkdtemp(prefix="rights-", dir="/tmp"))
    os.chmod(base, 0o755)
    d = Dirs(base, base / "home", base / "secret", base / "rootdir")
    d.home.mkdir()
    os.chown(d.home, NOBODY, NOBODY)
    d.secret.mkdir(mode=0o700)
    d.rootdir.mkdir(mode=0o755)
    try:
        yield d
    finally:
        shutil.rmtree(base, ignore_errors=True)


def user_dir(d: Dirs, name: str) -> Path:
    p = d.home / name
    p.mkdir()
    os.chown(p, NOBODY, NOBODY)
    return p


@contextlib.contextmanager
def user_tree(body: Callable[[Member], None], cwd: str = "/") -> Iterator[Tree]:
    """A one-task tree running as the user (body runs after the ids are
    taken), in cwd."""

    def root(t: Member) -> None:
        os.chdir(cwd)
        become_user()
        body(t)

    tree = spawn(root)
    try:
        yield tree
    finally:
        tree.kill()


def checkpoint_kill(tree: Tree) -> Image:
    """What `pyckpt checkpoint --kill` does to the tree."""
    image = pyckpt.checkpoint(tree.root).image
    tree.kill()
    return image


def stub_fd(r: Restarted, pid: int, fd: int) -> int:
    """A copy of fd of the restarted task pid (at the barrier)."""
    pidfd = os.pidfd_open(r.pids[pid])
    try:
        return pidfd_getfd(pidfd, fd)
    finally:
        os.close(pidfd)


def test_cwd_swapped_for_a_root_only_dir(dirs: Dirs) -> None:
    work = user_dir(dirs, "work")
    with user_tree(lambda t: None, cwd=str(work)) as tree:
        image = checkpoint_kill(tree)
    assert image.tasks[0].cwd == str(work)
    dirs.swap_for_link("work", dirs.secret)
    with pytest.raises(RestartError, match="chdir"):
        pyckpt.restart(image, release=False).kill()


def _listener_at(path: Path) -> Callable[[Member], None]:
    """A tree member listening on a unix socket bound at path, umask 027."""

    def body(t: Member) -> None:
        os.umask(0o027)
        s = t.keep(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        s.bind(str(path))
        s.listen(4)

    return body


def test_listener_path_swapped_for_a_root_only_dir(dirs: Dirs) -> None:
    sockdir = user_dir(dirs, "dir")
    path = sockdir / "sock"

    with user_tree(_listener_at(path)) as tree:
        image = checkpoint_kill(tree)
    dirs.swap_for_link("dir", dirs.secret)
    with pytest.raises(RestartError, match="unix"):
        pyckpt.restart(image, release=False).kill()
    assert not (dirs.secret / "sock").exists(), "root made a socket in secret"


def test_listener_restored_with_the_users_owner_and_mode(dirs: Dirs) -> None:
    sockdir = user_dir(dirs, "dir")
    path = sockdir / "sock"

    with user_tree(_listener_at(path)) as tree:
        image = checkpoint_kill(tree)
    recorded = path.lstat()
    assert (recorded.st_uid, stat.S_IMODE(recorded.st_mode)) == (NOBODY, 0o750)
    with pyckpt.restart(image, release=False):
        st = path.lstat()
        assert stat.S_ISSOCK(st.st_mode)
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
        assert stat.S_IMODE(st.st_mode) == 0o750
        assert st.st_ino != recorded.st_ino  # bound again


def test_deleted_file_dir_swapped_for_a_root_dir(dirs: Dirs) -> None:
    d2 = user_dir(dirs, "d2")

    def body(t: Member) -> None:
        fd = os.open(d2 / "f", os.O_RDWR | os.O_CREAT, 0o600)
        os.write(fd, b"data")
        os.unlink(d2 / "f")
        t.report(fd=fd)

    with user_tree(body) as tree:
        fd = tree.reports[0]["fd"]
        pid = tree.root
        image = checkpoint_kill(tree)
    dirs.swap_for_link("d2", dirs.rootdir)
    made_in_rootdir = ""
    try:
        with pyckpt.restart(image, release=False) as r:
            made_in_rootdir = os.readlink(f"/proc/{r.pids[pid]}/fd/{fd}")
    except RestartError:
        pass  # refused: nothing made
    assert not made_in_rootdir.startswith(str(dirs.rootdir)), (
        f"root made the deleted file in its own directory: {made_in_rootdir}"
    )
    assert made_in_rootdir == "", "restart did not refuse"
    assert list(dirs.rootdir.iterdir()) == []


def _ucred(s: socket.socket) -> tuple[int, int, int]:
    raw = s.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


def test_socketpair_peer_credentials_name_the_user() -> None:
    def body(t: Member) -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        t.keep((a, b))
        b.setsockopt(socket.SOL_SOCKET, SO_PASSCRED, 1)
        a.send(b"queued")
        t.report(a=a.fileno(), b=b.fileno())

    with user_tree(body) as tree:
        fa, fb = tree.reports[0]["a"], tree.reports[0]["b"]
        pid = tree.root
        image = checkpoint_kill(tree)
    with pyckpt.restart(image, release=False) as r:
        for fd in (fa, fb):
            with socket.socket(fileno=stub_fd(r, pid, fd)) as s:
                _, uid, gid = _ucred(s)
                assert (uid, gid) == (NOBODY, NOBODY), f"fd {fd}: peer uid {uid}"
        with socket.socket(fileno=stub_fd(r, pid, fb)) as b:
            assert b.getsockopt(socket.SOL_SOCKET, SO_PASSCRED)
            data, anc, _, _ = b.recvmsg(64, socket.CMSG_SPACE(12))
            assert data == b"queued"
            creds = [
                struct.unpack("3i", d)
                for lvl, typ, d in anc
                if (lvl, typ) == (socket.SOL_SOCKET, SCM_CREDENTIALS)
            ]
            assert creds, "no SCM_CREDENTIALS on a SO_PASSCRED socket"
            assert creds[0][1:] == (NOBODY, NOBODY), f"queued as {creds[0]}"


def test_memfd_belongs_to_the_user() -> None:
    # (root chowned its memfd before too: this guards the helper's owner)
    def body(t: Member) -> None:
        fd = os.memfd_create("mine", os.MFD_CLOEXEC)
        os.write(fd, b"x" * 100)
        t.report(fd=fd)

    with user_tree(body) as tree:
        fd = tree.reports[0]["fd"]
        pid = tree.root
        image = checkpoint_kill(tree)
    with pyckpt.restart(image, release=False) as r:
        copy = stub_fd(r, pid, fd)
        try:
            st = os.fstat(copy)
            assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
            assert os.pread(copy, 100, 0) == b"x" * 100
        finally:
            os.close(copy)


def test_regular_file_the_user_could_not_open(dirs: Dirs) -> None:
    secret = dirs.rootdir / "rootfile"
    secret.write_bytes(b"root only")
    os.chmod(secret, 0o600)

    def root(t: Member) -> None:
        fd = os.open(secret, os.O_RDONLY)  # passed by root, kept as the user
        become_user()
        t.report(fd=fd)

    tree = spawn(root)
    try:
        fd = tree.reports[0]["fd"]
        pid = tree.root
        image = checkpoint_kill(tree)
    finally:
        tree.kill()
    with pytest.raises(RestartError) as e:
        pyckpt.restart(image, release=False).kill()
    assert f"task {pid} fd {fd}" in str(e.value)
    assert str(secret) in str(e.value)


def test_a_users_tree_of_every_kind_restarts(dirs: Dirs) -> None:
    """Nothing tampered with: a user's tree holding a file, a directory, a
    FIFO, /dev/null, a unix listener with a connection, a memfd, a deleted
    file and a pipe restarts, each fd on the object it had, the objects
    the helpers made the user's."""
    mine = user_dir(dirs, "mine")
    made: dict[str, int] = {}

    def body(t: Member) -> None:
        os.umask(0o022)
        (mine / "file").write_bytes(b"hello")
        made["file"] = os.open(mine / "file", os.O_RDWR)
        os.lseek(made["file"], 3, os.SEEK_SET)
        made["dir"] = os.open(mine, os.O_RDONLY | os.O_DIRECTORY)
        os.mkfifo(mine / "fifo")
        made["fifo"] = os.open(mine / "fifo", os.O_RDWR)
        made["null"] = os.open("/dev/null", os.O_WRONLY)
        lst = t.keep(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        lst.bind(str(mine / "sock"))
        lst.listen(2)
        cli = t.keep(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        cli.connect(str(mine / "sock"))
        acc = t.keep(lst.accept()[0])
        made.update(lst=lst.fileno(), cli=cli.fileno(), acc=acc.fileno())
        made["memfd"] = os.memfd_create("m")
        made["deleted"] = os.open(mine / "gone", os.O_RDWR | os.O_CREAT, 0o640)
        os.unlink(mine / "gone")
        made["r"], made["w"] = os.pipe()
        t.report(**made)

    with user_tree(body) as tree:
        fds = {k: v for k, v in tree.reports[0].items() if k != "pid"}
        pid = tree.root
        image = checkpoint_kill(tree)
    with pyckpt.restart(image, release=False) as r:
        new = r.pids[pid]
        for name, fd in fds.items():
            copy = stub_fd(r, pid, fd)
            try:
                st = os.fstat(copy)
                if name in ("file", "dir", "fifo", "memfd", "deleted", "lst"):
                    assert st.st_uid == NOBODY, f"{name}: uid {st.st_uid}"
                if name in ("cli", "acc", "lst"):
                    with socket.socket(fileno=os.dup(copy)) as s:
                        assert _ucred(s)[1] == NOBODY, f"{name}: peer uid"
            finally:
                os.close(copy)
        assert os.readlink(f"/proc/{new}/fd/{fds['file']}") == str(mine / "file")
        assert os.readlink(f"/proc/{new}/fd/{fds['deleted']}") == (
            f"{mine / 'gone'} (deleted)"
        )
        pos = Path(f"/proc/{new}/fdinfo/{fds['file']}").read_text().split()[1]
        assert pos == "3"
        st = (mine / "sock").lstat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o755)
