"""ctypes access to the few libc calls Python 3.11's os module lacks
(signalfd, timerfd_*, clock_gettime on any clock id), shared by the kinds."""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_int64)]


class Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", Timespec), ("it_value", Timespec)]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def signalfd(mask: int, flags: int) -> int:
    """A new signalfd reading the signals of ``mask`` (bit sig - 1)."""
    # glibc passes _NSIG / 8 = 8 bytes of the sigset to the kernel
    m = ctypes.c_uint64(mask)
    return _check(_libc.signalfd(-1, ctypes.byref(m), flags), "signalfd")


def timerfd_create(clockid: int, flags: int) -> int:
    return _check(_libc.timerfd_create(clockid, flags), "timerfd_create")


def timerfd_settime(
    fd: int, flags: int, value: tuple[int, int], interval: tuple[int, int]
) -> None:
    its = Itimerspec(Timespec(*interval), Timespec(*value))
    _check(_libc.timerfd_settime(fd, flags, ctypes.byref(its), None), "timerfd_settime")


def timerfd_gettime(fd: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(time left, interval) as (sec, nsec) pairs."""
    its = Itimerspec()
    _check(_libc.timerfd_gettime(fd, ctypes.byref(its)), "timerfd_gettime")
    v, i = its.it_value, its.it_interval
    return (v.tv_sec, v.tv_nsec), (i.tv_sec, i.tv_nsec)


# _IOW('T', 0, __u64) of <linux/timerfd.h> (CONFIG_CHECKPOINT_RESTORE)
TFD_IOC_SET_TICKS = (1 << 30) | (8 << 16) | (ord("T") << 8) | 0


def timerfd_set_ticks(fd: int, ticks: int) -> None:
    t = ctypes.c_uint64(ticks)
    _check(
        _libc.ioctl(fd, ctypes.c_ulong(TFD_IOC_SET_TICKS), ctypes.byref(t)),
        "ioctl(TFD_IOC_SET_TICKS)",
    )


def clock_gettime_ns(clockid: int) -> int:
    ts = Timespec()
    _check(_libc.clock_gettime(clockid, ctypes.byref(ts)), "clock_gettime")
    return ts.tv_sec * 1_000_000_000 + ts.tv_nsec
