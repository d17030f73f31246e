"""signalfd mechanics on the host (no module): fdinfo in, the same fd out."""

from __future__ import annotations

import os
import signal

import pytest

from pyckpt.kinds import signalfd as sfd


def _fdinfo(fd: int) -> str:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return f.read()


def _mask(*sigs: int) -> int:
    return sum(1 << (s - 1) for s in sigs)


@pytest.mark.parametrize(
    "sigs",
    [
        (signal.SIGUSR1,),
        (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP),
        (signal.SIGRTMIN, signal.SIGRTMAX, signal.SIGINT),
        (),
    ],
)
@pytest.mark.parametrize("nonblock", [False, True])
def test_roundtrip(sigs: tuple[int, ...], nonblock: bool) -> None:
    mask = _mask(*sigs)
    fd = sfd.make(sfd.Signalfd(mask), os.O_NONBLOCK if nonblock else 0)
    try:
        state = sfd.parse_fdinfo(_fdinfo(fd))
        assert state.sigmask == mask
        assert bool(os.get_blocking(fd)) is not nonblock
        assert os.get_inheritable(fd) is False  # SFD_CLOEXEC: fd flag, set
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[signalfd]"
    finally:
        os.close(fd)


def test_unblockable_dropped_by_kernel() -> None:
    # what the reader refuses (SIGKILL/SIGSTOP bits) is what the kernel drops
    fd = sfd.make(sfd.Signalfd(_mask(signal.SIGKILL, signal.SIGUSR2)), 0)
    try:
        assert sfd.parse_fdinfo(_fdinfo(fd)).sigmask == _mask(signal.SIGUSR2)
    finally:
        os.close(fd)
    assert sfd.UNBLOCKABLE == _mask(signal.SIGKILL, signal.SIGSTOP)


def test_reads_a_signal() -> None:
    # the remade fd is a working signalfd, not only the same fdinfo
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    fd = sfd.make(sfd.Signalfd(_mask(signal.SIGUSR1)), os.O_NONBLOCK)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        info = os.read(fd, 128)
        assert int.from_bytes(info[:4], "little") == signal.SIGUSR1
    finally:
        os.close(fd)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def test_no_sigmask_line() -> None:
    with pytest.raises(ValueError, match="sigmask"):
        sfd.parse_fdinfo("pos:\t0\nflags:\t02\n")


def test_signal_names() -> None:
    assert sfd.signals(_mask(signal.SIGINT, signal.SIGTERM)) == ["SIGINT", "SIGTERM"]
