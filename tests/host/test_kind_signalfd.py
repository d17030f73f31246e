"""signalfd mechanics on the host (no module): fdinfo in, the same fd out."""

from __future__ import annotations

import os
import signal

import pytest
from test_kind_records import _bad, kinds_image

from pyckpt.abi import HdrType
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


# ---- the SIGNALFD record (moved from test_kind_records.py) -------------------


@pytest.fixture(scope="module")
def data() -> bytes:
    return kinds_image().to_bytes()


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("objref", 0, "SIGNALFD record: objref 0 <= 0"),
        ("sigmask", 1 << (signal.SIGKILL - 1), "holds SIGKILL or SIGSTOP"),
        ("sigmask", 1 << (signal.SIGSTOP - 1), "holds SIGKILL or SIGSTOP"),
        ("objref", 2, "SIGNALFD record: objref 2 differs from its FILE's 1"),
    ],
)
def test_signalfd_refused(data: bytes, field: str, value: int, fragment: str) -> None:
    _bad(data, HdrType.SIGNALFD, field, value, fragment)
