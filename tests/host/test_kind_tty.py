"""Terminal and stateless-device mechanics on the host: ptys need no module."""

from __future__ import annotations

import copy
import os
import stat

import pytest
from hosthelpers import in_child
from test_image import build, find, first, patch, raises, specs

from pyckpt import show
from pyckpt.abi import HdrType
from pyckpt.errors import RestartError
from pyckpt.image import Image, ImageError, Record
from pyckpt.kinds import tty


class _Leader:
    """A child that leads a new session with the pty slave as its
    controlling terminal, until close()."""

    def __init__(self, slave: int) -> None:
        up_r, up_w = os.pipe()
        self._down_r, self._down_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                tty.take_ctty(slave)
                os.write(up_w, b"x")
                os.read(self._down_r, 1)
            finally:
                os._exit(0)
        self.pid = pid
        os.read(up_r, 1)
        os.close(up_r)
        os.close(up_w)

    def close(self) -> None:
        os.write(self._down_w, b"x")
        os.waitpid(self.pid, 0)
        os.close(self._down_r)
        os.close(self._down_w)


def test_slot_mapping() -> None:
    assert [tty.slot(fd, os.O_RDWR) for fd in (0, 1, 2)] == [0, 1, 2]
    assert tty.slot(7, os.O_RDONLY) == 0
    assert tty.slot(7, os.O_WRONLY) == 1
    assert tty.slot(7, os.O_RDWR | os.O_NONBLOCK) == 2


def test_probe_ctty_session_and_foreground() -> None:
    """A session leader with the pty slave as its controlling terminal: the
    probe names its session and foreground group from /proc."""
    master, slave = os.openpty()
    leader = _Leader(slave)
    pid = leader.pid
    try:
        st = os.fstat(slave)
        t = tty.probe(slave, st, [os.getpid(), pid])
        assert t.flags == tty.TtyFlag.TERMINAL | tty.TtyFlag.CTTY
        assert (t.sid, t.pgrp) == (pid, pid)
        m = tty.probe(master, os.fstat(master), [pid])
        assert m.flags == tty.TtyFlag.TERMINAL | tty.TtyFlag.PTY_MASTER
        assert tty.kind_name(st.st_rdev, True) == "pty"
        assert tty.kind_name(os.fstat(master).st_rdev, True) == "pty master"
    finally:
        leader.close()
        os.close(master)
        os.close(slave)


def test_probe_not_a_ctty_and_not_a_terminal() -> None:
    master, slave = os.openpty()
    try:
        t = tty.probe(slave, os.fstat(slave), [os.getpid()])
        # the test runner may have a terminal, but not this new pty
        assert t.flags == tty.TtyFlag.TERMINAL and t.sid == 0
    finally:
        os.close(master)
        os.close(slave)
    fd = os.open("/dev/null", os.O_RDWR)
    try:
        assert tty.probe(fd, os.fstat(fd), [os.getpid()]).flags == 0
    finally:
        os.close(fd)


def test_take_ctty_never_steals() -> None:
    """A second session cannot take a pty that controls the first: the
    reason is given, nothing is stolen (TIOCSCTTY arg 0)."""
    master, slave = os.openpty()
    leader = _Leader(slave)
    pid = leader.pid
    try:

        def other() -> int:
            os.setsid()
            why = tty.take_ctty(slave)
            return 0 if "another session" in why else 1

        assert in_child(other) == 0
        t = tty.probe(slave, os.fstat(slave), [pid])
        assert t.sid == pid  # still the first session's
    finally:
        leader.close()
        os.close(master)
        os.close(slave)


def test_take_ctty_refuses_a_non_terminal() -> None:
    def body() -> int:
        os.setsid()
        fd = os.open("/dev/null", os.O_RDWR)
        return 0 if "not a terminal" in tty.take_ctty(fd) else 1

    assert in_child(body) == 0


def test_foreground_round_trip() -> None:
    """After TIOCSCTTY the leader reads and sets the foreground group."""
    master, slave = os.openpty()

    def body() -> int:
        os.setsid()
        if tty.take_ctty(slave):
            return 1
        if tty.foreground(slave) != os.getpid():
            return 2
        child = os.fork()
        if child == 0:
            os.setpgid(0, 0)
            os._exit(0 if tty.set_foreground(slave, os.getpid()) == "" else 1)
        if os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) != 0:
            return 3
        return 0 if tty.foreground(slave) == child else 4

    try:
        assert in_child(body) == 0
        assert tty.foreground(slave) == -1  # not our controlling terminal
    finally:
        os.close(master)
        os.close(slave)


def test_stdio_null_and_file(tmp_path: pytest.TempPathFactory) -> None:
    got = tty.stdio_sources({0, 1, 2}, tty.STDIO_NULL)
    try:
        assert len(set(got.values())) == 1
        assert os.fstat(got[0]).st_rdev == os.makedev(1, 3)
    finally:
        os.close(got[0])
    path = str(tmp_path) + "/out"  # type: ignore[operator]
    got = tty.stdio_sources({0, 1, 2}, path)
    try:
        assert got[1] == got[2] != got[0]
        assert os.fstat(got[0]).st_rdev == os.makedev(1, 3)
        st = os.fstat(got[1])
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        os.write(got[1], b"hello")
        with open(path, "rb") as f:
            assert f.read() == b"hello"
    finally:
        for fd in set(got.values()):
            os.close(fd)


def test_stdio_option_checked(tmp_path: pytest.TempPathFactory) -> None:
    tty.check_stdio("null")
    tty.check_stdio("inherit")
    tty.check_stdio(str(tmp_path) + "/new")  # type: ignore[operator]
    for bad in ("relative", "/dev/null", str(tmp_path)):
        with pytest.raises(ValueError, match="--stdio"):
            tty.check_stdio(bad)
    link = str(tmp_path) + "/link"  # type: ignore[operator]
    os.symlink("/etc/passwd", link)
    with pytest.raises(ValueError, match="not a regular file"):
        tty.check_stdio(link)
    with pytest.raises(RestartError):
        tty.stdio_sources({1}, link)  # O_NOFOLLOW at open time too


def test_stdio_inherit_shares_what_the_restarter_shares() -> None:
    """Slots whose restarter fds are one open file description get one fd;
    a closed restarter fd is a clear error."""

    def body() -> int:
        _master, slave = os.openpty()
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        got = tty.stdio_sources({0, 1, 2}, tty.STDIO_INHERIT)
        if (
            len(set(got.values())) != 1
            or os.fstat(got[0]).st_rdev != os.fstat(slave).st_rdev
        ):
            return 1
        null = os.open("/dev/null", os.O_WRONLY)
        os.dup2(null, 2)
        got = tty.stdio_sources({0, 1, 2}, tty.STDIO_INHERIT)
        if got[0] != got[1] or got[2] == got[0]:
            return 2
        os.close(0)
        try:
            tty.stdio_sources({0}, tty.STDIO_INHERIT)
        except RestartError as e:
            return 0 if "fd 0, which is closed" in str(e) else 3
        return 4

    assert in_child(body) == 0


# ---- the TTY record (moved from test_image.py) --------------------------------


def test_tty_checks(data: bytes, records: list[Record]) -> None:
    """Every malformed TTY value is refused, naming the record and field."""
    t = first(records, HdrType.TTY)
    assert t.fields == {"objref": 23, "flags": 5, "sid": 103, "pgrp": 103}
    raises(patch(data, t, "objref", 0), t.offset, "TTY record: objref 0 <= 0")
    raises(patch(data, t, "objref", 1), t.offset, "objref 1 differs from its FILE's 23")
    raises(patch(data, t, "flags", 0x8), t.offset, "TTY record: unknown flags 0x8")
    raises(patch(data, t, "flags", 0x4), t.offset, "CTTY on a pty master or on no")
    raises(patch(data, t, "flags", 0x7), t.offset, "CTTY on a pty master")
    raises(patch(data, t, "sid", 0), t.offset, "sid 0 of a controlling terminal")
    raises(patch(data, t, "pgrp", -1), t.offset, "TTY record: pgrp -1 < 0")
    raises(patch(data, t, "flags", 0x1), t.offset, "sid or pgrp without CTTY")
    sp = specs(data)
    i = find(sp, HdrType.TTY)
    # a TTY FILE without its TTY record; a TTY record after another FILE
    gone = copy.deepcopy(sp)
    del gone[i]
    built, _ = build(gone)
    with pytest.raises(ImageError, match="FILE of kind TTY"):
        Image.from_bytes(built)
    moved = copy.deepcopy(sp)
    rec = moved.pop(i)
    moved.insert(find(moved, HdrType.FILE, objref=5) + 1, rec)
    built, _ = build(moved)
    with pytest.raises(ImageError, match="TTY"):
        Image.from_bytes(built)


def test_tty_show(image: Image) -> None:
    text = show.summary(image)
    assert (
        "terminal 23: pty /dev/pts/3 rdev 136:3, controlling terminal of session "
        "103 (foreground 103)" in text
    )
