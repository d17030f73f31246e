"""pyckpt.syscalls against the real calls, on the host where each is
harmless; and the one way to libc: no ctypes, no cffi ABI mode in pyckpt/."""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from pathlib import Path

import pytest

from pyckpt import syscalls as sc

ROOT = Path(__file__).resolve().parents[2]
TMPFS_MAGIC = 0x01021994  # <linux/magic.h>
MS = 1_000_000


def test_no_other_way_to_libc() -> None:
    # ctypes and cffi's ABI mode read errno late and retype layouts
    for path in sorted((ROOT / "pyckpt").rglob("*.py")):
        text = path.read_text()
        for banned in ("ctypes", "dlopen", "cffi.FFI", "import cffi"):
            assert banned not in text, f"{path.relative_to(ROOT)}: {banned}"
    assert not (ROOT / "pyckpt" / "kinds" / "_libc.py").exists()


def _in_child(fn: object) -> int:
    """Run fn() in a forked child; its exit status (0: fn returned)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()  # type: ignore[operator]
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_kcmp_file_and_files() -> None:
    r, w = os.pipe()
    d = os.dup(r)
    me = os.getpid()
    try:
        assert sc.kcmp_file(me, r, me, d)
        assert not sc.kcmp_file(me, r, me, w)
        assert sc.kcmp_files(me, me) == 0
        with pytest.raises(OSError) as info:
            sc.kcmp_file(me, 1_000_000, me, r)
        assert info.value.errno == errno.EBADF
    finally:
        for fd in (r, w, d):
            os.close(fd)


def test_kcmp_files_orders_two_tables() -> None:
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(wr)
        os.read(rd, 1)  # until the parent is done
        os._exit(0)
    os.close(rd)
    try:
        me = os.getpid()
        a, b = sc.kcmp_files(me, pid), sc.kcmp_files(pid, me)
        assert a in (-1, 1) and b == -a
    finally:
        os.close(wr)
        os.waitpid(pid, 0)


def test_pidfd_getfd_of_own_fd() -> None:
    r, w = os.pipe()
    pidfd = os.pidfd_open(os.getpid())
    try:
        got = sc.pidfd_getfd(pidfd, w)
        try:
            assert sc.kcmp_file(os.getpid(), w, os.getpid(), got)
            assert not os.get_inheritable(got)
        finally:
            os.close(got)
        with pytest.raises(OSError) as info:
            sc.pidfd_getfd(pidfd, 1_000_000)
        assert info.value.errno == errno.EBADF
        assert "pidfd_getfd" in str(info.value)
    finally:
        for fd in (r, w, pidfd):
            os.close(fd)


def test_tee_copies_without_consuming() -> None:
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        os.write(w1, b"hello")
        assert sc.tee(r1, w2, 100) == 5
        assert os.read(r2, 100) == b"hello"
        assert os.read(r1, 100) == b"hello"  # still there
        with pytest.raises(OSError) as info:  # empty, nonblocking
            sc.tee(r1, w2, 100)
        assert info.value.errno == errno.EAGAIN
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def test_epoll_add_and_kcmp_epoll_tfd() -> None:
    r, w = os.pipe()
    ep = select.epoll()
    me = os.getpid()
    try:
        sc.epoll_add(ep.fileno(), r, select.EPOLLIN, 0xDEADBEEF00000007)
        os.write(w, b"x")
        assert ep.poll(0) == [(7, select.EPOLLIN)]
        with open(f"/proc/self/fdinfo/{ep.fileno()}") as f:
            assert "data: deadbeef00000007" in f.read()
        assert sc.kcmp_epoll_tfd(me, r, me, ep.fileno(), r)
        assert not sc.kcmp_epoll_tfd(me, w, me, ep.fileno(), r)
        with pytest.raises(OSError) as info:  # no second item on r
            sc.kcmp_epoll_tfd(me, r, me, ep.fileno(), r, 1)
        assert info.value.errno == errno.ENOENT
        with pytest.raises(OSError) as info:
            sc.epoll_add(ep.fileno(), r, select.EPOLLIN, 0)
        assert info.value.errno == errno.EEXIST
    finally:
        ep.close()
        os.close(r)
        os.close(w)


def test_signalfd_mask() -> None:
    mask = (1 << (signal.SIGUSR1 - 1)) | (1 << (signal.SIGRTMAX - 1))
    fd = sc.signalfd(mask, os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            assert f"sigmask:\t{mask:016x}" in f.read()
        assert not os.get_blocking(fd)
        sc.signalfd(1 << (signal.SIGUSR2 - 1), 0, fd)  # the same fd, new mask
        with open(f"/proc/self/fdinfo/{fd}") as f:
            assert f"sigmask:\t{1 << (signal.SIGUSR2 - 1):016x}" in f.read()
    finally:
        os.close(fd)
    with pytest.raises(OSError) as info:
        sc.signalfd(mask, 0, 1_000_000)
    assert info.value.errno == errno.EBADF


def test_timerfd_round_trip() -> None:
    fd = sc.timerfd_create(time.CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        assert sc.timerfd_gettime(fd) == ((0, 0), (0, 0))
        sc.timerfd_settime(fd, 0, (1000, 5), (7, 250 * MS))
        (sec, nsec), interval = sc.timerfd_gettime(fd)
        assert interval == (7, 250 * MS)
        assert 0 < sec * 10**9 + nsec <= 1000 * 10**9 + 5
        sc.timerfd_set_ticks(fd, 3)
        assert int.from_bytes(os.read(fd, 8), "little") == 3
        with pytest.raises(OSError) as info:
            sc.timerfd_settime(fd, 0, (0, 10**9), (0, 0))  # nsec out of range
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    with pytest.raises(OSError) as info:
        sc.timerfd_create(12345, 0)
    assert info.value.errno == errno.EINVAL


def test_clock_gettime_ns() -> None:
    before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    now = sc.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert before <= now <= time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    with pytest.raises(OSError) as info:
        sc.clock_gettime_ns(12345)
    assert info.value.errno == errno.EINVAL


def test_fstatfs_type_of_a_memfd() -> None:
    fd = os.memfd_create("statfs")
    try:
        assert sc.fstatfs_type(fd) == TMPFS_MAGIC
    finally:
        os.close(fd)
    with pytest.raises(OSError) as info:
        sc.fstatfs_type(1_000_000)
    assert info.value.errno == errno.EBADF


def test_setfsuid_reads_with_minus_one() -> None:
    # setfs*id(-1) changes nothing and returns the current value
    assert sc.setfsuid(-1) == os.geteuid()
    assert sc.setfsgid(0xFFFFFFFF) == os.getegid()


def test_prctl_in_a_child() -> None:
    def child() -> None:
        assert sc.prctl(sc.PR_GET_DUMPABLE) == 1
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        assert sc.prctl(sc.PR_GET_DUMPABLE) == 0
        assert sc.prctl(sc.PR_GET_NO_NEW_PRIVS) == 0
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        assert sc.prctl(sc.PR_GET_NO_NEW_PRIVS) == 1
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        try:
            sc.prctl(sc.PR_SET_DUMPABLE, 7)
        except OSError as e:
            assert e.errno == errno.EINVAL
        else:
            raise AssertionError("PR_SET_DUMPABLE 7 accepted")

    assert _in_child(child) == 0
