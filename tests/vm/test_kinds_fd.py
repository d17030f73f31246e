"""signalfd, timerfd, memfd and deleted files: round trips against the oracle
(tests/vm/oracle.py: mask, clock/flags/interval/armed, contents hash, seals,
mode), and the user-like tree of issue 10 that is theirs: a supervisor with
a timerfd and a signalfd, checkpointed, killed, restarted, compared."""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from oracle import facts, fdinfo, ppids, wait_for
from trees import Member, tree_of

import pyckpt
from pyckpt import syscalls
from pyckpt.checkpointer import Options
from pyckpt.checkpointer import checkpoint as _checkpoint
from pyckpt.errors import CheckpointError
from pyckpt.kinds import timerfd as tfd
from pyckpt.syscalls import pidfd_getfd

SLEEP = ["sleep", "1000"]
MS = 1_000_000


def _mask(*sigs: int) -> int:
    return sum(1 << (s - 1) for s in sigs)


def roundtrip(
    body: Callable[[Member], None],
    check: Callable[[list[int]], None] = lambda new: None,
    **kw,
) -> None:
    """Checkpoint, kill, restart (stubs held before exec), compare with the
    oracle, then check(restarted pids) while the stubs hold their fds."""
    with tree_of(body) as pids:
        before = facts(pids)
        parents = ppids(pids)
        res = _checkpoint(pids[0], kill=True, **kw)
        with pyckpt.restart(res.image, argv=SLEEP, release=False) as r:
            new = [r.pids[p] for p in pids]
            assert facts(new) == before
            assert ppids(new) == parents
            check(new)


def _copy(pid: int, fd: int) -> int:
    pidfd = os.pidfd_open(pid)
    try:
        return pidfd_getfd(pidfd, fd)
    finally:
        os.close(pidfd)


def _of(pid: int, link: str) -> list[int]:
    """The fds of pid whose /proc link is ``link``, in order."""
    return [
        fd
        for fd in sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))
        if os.readlink(f"/proc/{pid}/fd/{fd}") == link
    ]


def _timer(clock: int, flags: int, value_ns: int, interval_ns: int = 0) -> int:
    fd = syscalls.timerfd_create(clock, 0)
    syscalls.timerfd_settime(
        fd, flags, divmod(value_ns, 10**9), divmod(interval_ns, 10**9)
    )
    return fd


# ---- signalfd ---------------------------------------------------------------------


def test_signalfd_masks_and_flags() -> None:
    def root(t: Member) -> None:
        from pyckpt.kinds import signalfd as sfd

        sfd.make(sfd.Signalfd(_mask(signal.SIGCHLD, signal.SIGTERM)), 0)
        sfd.make(sfd.Signalfd(_mask(signal.SIGUSR1)), os.O_NONBLOCK)
        fd = sfd.make(sfd.Signalfd(_mask(signal.SIGRTMIN + 3)), 0)
        os.set_inheritable(fd, True)  # no SFD_CLOEXEC on this one
        t.fork(lambda t: None)  # shared by a child

    def check(new: list[int]) -> None:
        masks = [
            int(fdinfo(new[0], fd)["sigmask"], 16)
            for fd in _of(new[0], "anon_inode:[signalfd]")
        ]
        assert masks == [
            _mask(signal.SIGCHLD, signal.SIGTERM),
            _mask(signal.SIGUSR1),
            _mask(signal.SIGRTMIN + 3),
        ]

    roundtrip(root, check)


# ---- timerfd ----------------------------------------------------------------------


def test_timerfds_of_every_shape() -> None:
    def root(t: Member) -> None:
        _timer(time.CLOCK_MONOTONIC, 0, 600_000 * MS, 250 * MS)  # periodic
        _timer(time.CLOCK_BOOTTIME, 0, 900_000 * MS)  # one shot
        now = time.clock_gettime_ns(time.CLOCK_REALTIME)
        _timer(
            time.CLOCK_REALTIME,
            tfd.TFD_TIMER_ABSTIME | tfd.TFD_TIMER_CANCEL_ON_SET,
            now + 3600 * 10**9,
        )
        syscalls.timerfd_create(time.CLOCK_MONOTONIC, os.O_NONBLOCK)  # disarmed

    def check(new: list[int]) -> None:
        left = [
            int(fdinfo(new[0], fd)["it_value"].strip("()").split(",")[0])
            for fd in _of(new[0], "anon_inode:[timerfd]")
        ]
        # relative timers restart with the time they had left, the absolute
        # one at its own expiry (an hour on), the disarmed one stays so
        assert 500 <= left[0] <= 600 and 800 <= left[1] <= 900
        assert 3000 <= left[2] <= 3600 and left[3] == 0

    roundtrip(root, check)


def test_timerfd_unread_ticks_survive() -> None:
    def root(t: Member) -> None:
        _timer(time.CLOCK_MONOTONIC, 0, 1 * MS)  # expired once, not read
        _timer(time.CLOCK_MONOTONIC, 0, 1 * MS, 3600 * 10**9)  # + next in 1 h
        time.sleep(0.05)

    def check(new: list[int]) -> None:
        ticks = [
            int(fdinfo(new[0], fd)["ticks"])
            for fd in _of(new[0], "anon_inode:[timerfd]")
        ]
        assert ticks == [1, 1]

    roundtrip(root, check)


def test_absolute_timer_that_expired_while_down_fires_at_once() -> None:
    def root(t: Member) -> None:
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        _timer(time.CLOCK_MONOTONIC, tfd.TFD_TIMER_ABSTIME, now + 2000 * MS)
        _timer(time.CLOCK_MONOTONIC, 0, 2000 * MS)  # relative: restarts

    with tree_of(root) as pids:
        res = _checkpoint(pids[0], kill=True)
    time.sleep(2.5)  # the tree is down past the absolute expiry
    with pyckpt.restart(res.image, argv=SLEEP, release=False) as r:
        new = r.pids[pids[0]]
        timers = [fdinfo(new, fd) for fd in _of(new, "anon_inode:[timerfd]")]
        assert int(timers[0]["ticks"]) == 1 and timers[0]["it_value"] == "(0, 0)"
        assert int(timers[1]["ticks"]) == 0 and timers[1]["it_value"] != "(0, 0)"


# ---- memfd and deleted files --------------------------------------------------------


def test_memfds_contents_seals_and_sharing() -> None:
    def root(t: Member) -> None:
        a = os.memfd_create("same name", os.MFD_ALLOW_SEALING)
        os.write(a, b"sealed contents " * 100)
        os.lseek(a, 7, os.SEEK_SET)
        fcntl.fcntl(a, 1033, 0x2 | 0x4 | 0x8)  # shrink, grow, write
        b = os.memfd_create("same name", 0)  # another memfd, the same name
        os.ftruncate(b, 16 << 20)  # 16 MiB, mostly a hole
        os.pwrite(b, b"near the start", 4096)
        os.fchmod(b, 0o640)
        # b reopened read-only: another open file on b's inode
        os.open(f"/proc/self/fd/{b}", os.O_RDONLY)
        c = os.memfd_create("mapped", 0)
        os.ftruncate(c, 8192)
        m = t.keep(mmap.mmap(c, 8192))
        m[10:20] = b"via mmap!!"
        t.fork(lambda t: None)

    def check(new: list[int]) -> None:
        # two memfds of one name stay two (and b's two files one inode: the
        # oracle's obj); the names are kept
        assert len(_of(new[0], "/memfd:same name (deleted)")) == 3
        assert len(_of(new[0], "/memfd:mapped (deleted)")) == 2  # + mmap's dup
        (sealed,) = _of(new[0], "/memfd:same name (deleted)")[:1]
        c = _copy(new[0], sealed)
        try:
            assert fcntl.fcntl(c, 1034) == 0x2 | 0x4 | 0x8
            assert os.lseek(c, 0, os.SEEK_CUR) == 7
        finally:
            os.close(c)

    roundtrip(root, check)


def test_deleted_file_keeps_contents_offset_and_name() -> None:
    path = f"/tmp/kinds-deleted-{os.getpid()}.log"

    def root(t: Member) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o604)
        os.write(fd, b"written before the delete\n")
        r = os.open(path, os.O_RDONLY)
        os.lseek(r, 8, os.SEEK_SET)
        os.unlink(path)

    try:

        def check(new: list[int]) -> None:
            assert len(_of(new[0], f"{path} (deleted)")) == 2
            assert not os.path.exists(path)

        roundtrip(root, check)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def test_memfd_over_the_limit_refused_then_raised() -> None:
    def root(t: Member) -> None:
        fd = os.memfd_create("big", 0)
        os.write(fd, os.urandom(2 << 20))  # 2 MiB of data

    with tree_of(root) as pids:
        with pytest.raises(CheckpointError) as e:
            pyckpt.checkpoint(pids[0])
        msg = str(e.value)
        assert f"task {pids[0]}" in msg and "/memfd:big" in msg
        assert "2097152 bytes" in msg and "--max-file-contents" in msg
        before = facts(pids)
        res = _checkpoint(pids[0], options=Options(contents_limit=4 << 20), kill=True)
        with pyckpt.restart(res.image, argv=SLEEP, release=False) as r:
            assert facts([r.pids[p] for p in pids]) == before


# ---- a supervisor with a timerfd and a signalfd (issue 10's user-like tree) ----------

DOWN = "-- down --"
SUPERVISOR = textwrap.dedent(
    """
    import ctypes, os, select, signal, time
    libc = ctypes.CDLL(None, use_errno=True)
    LOG, TFD, SFD = 5, 6, 7
    signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGUSR1, signal.SIGCHLD}})
    def kind(fd):
        try:
            return os.readlink(f"/proc/self/fd/{{fd}}")
        except OSError:
            return ""
    if kind(TFD) != "anon_inode:[timerfd]":  # a first start: make them
        os.closerange(0, 3)  # stdio on /dev/null: another helper's kind
        log = os.open({log!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, LOG); os.close(log)
        t = libc.timerfd_create(time.CLOCK_MONOTONIC, os.O_NONBLOCK)
        its = (ctypes.c_long * 4)(0, 300_000_000, 0, 300_000_000)
        assert libc.timerfd_settime(t, 0, its, None) == 0
        os.dup2(t, TFD); os.close(t)
        mask = ctypes.c_uint64((1 << (signal.SIGUSR1 - 1)) | (1 << (signal.SIGCHLD - 1)))
        s = libc.signalfd(-1, ctypes.byref(mask), os.O_NONBLOCK)
        os.dup2(s, SFD); os.close(s)
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "1000"])  # a worker
        os.write(LOG, b"started\\n")
    else:
        os.write(LOG, b"restored\\n")
    ep = select.epoll()
    ep.register(TFD, select.EPOLLIN)
    ep.register(SFD, select.EPOLLIN)
    while True:
        for fd, _ in ep.poll():
            if fd == TFD:
                n = int.from_bytes(os.read(TFD, 8), "little")
                os.write(LOG, f"tick {{n}}\\n".encode())
            else:
                sig = int.from_bytes(os.read(SFD, 128)[:4], "little")
                os.write(LOG, f"signal {{signal.Signals(sig).name}}\\n".encode())
    """
)


def test_supervisor_with_timerfd_and_signalfd(tmp_path) -> None:
    log = str(tmp_path / "supervisor.log")
    script = SUPERVISOR.format(log=log)
    errors = tmp_path / "stderr"
    with open(errors, "wb") as err:
        sup = subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            close_fds=True,
            start_new_session=True,
        )
    new_root = 0
    try:
        try:
            wait_for(lambda: _log_after(log).count("tick") >= 2, 60)
        except TimeoutError:
            raise AssertionError(f"no supervisor: {errors.read_text()!r}") from None
        os.kill(sup.pid, signal.SIGUSR1)
        wait_for(lambda: "signal SIGUSR1" in _log_after(log), 30)
        pids = [sup.pid, *psutil_children(sup.pid)]
        assert len(pids) == 2
        # stopped, its log offset stays put; its periodic timer fires on
        # (a tick unread: ready in epoll, as the restored one will be)
        os.kill(sup.pid, signal.SIGSTOP)
        wait_for(lambda: _state(sup.pid) == "T", 10)
        time.sleep(0.4)
        before = facts(pids)
        res = _checkpoint(sup.pid, kill=True)
        sup.wait(10)
        with open(log, "a") as f:
            f.write(DOWN + "\n")
        with pyckpt.restart(res.image, release=False) as r:
            new = [r.pids[p] for p in pids]
            new_root = new[0]
            assert facts(new) == before
            r.release()
            wait_for(lambda: "restored" in _log_after(log, DOWN), 60)
            after = _log_after(log, DOWN)
            wait_for(lambda: "tick" in _log_after(log, DOWN), 30)
            os.kill(new[0], signal.SIGUSR1)
            wait_for(
                lambda: "signal SIGUSR1" in _log_after(log, DOWN),
                30,
            )
            os.kill(new[1], signal.SIGKILL)  # the worker dies: SIGCHLD read
            wait_for(
                lambda: "signal SIGCHLD" in _log_after(log, DOWN),
                30,
            )
            assert "started" not in after
            r.kill()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sup.pid, signal.SIGKILL)
        if new_root:
            with contextlib.suppress(ProcessLookupError):
                os.kill(new_root, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            sup.wait(10)


def _log_after(log: str, marker: str = "") -> str:
    if not os.path.exists(log):
        return ""
    with open(log) as f:
        return f.read().partition(marker)[2] if marker else f.read()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def psutil_children(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]
