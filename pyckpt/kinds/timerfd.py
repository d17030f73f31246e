"""timerfd: clock, flags, interval, time left and unread expirations.

Checkpoint asks the coordinator's copy of the file for its time left
(timerfd_gettime(): for a periodic timer that expired it also counts the
expirations missed since, as a read(2) would), then reads fdinfo for the
clock, the settime flags and the unread count (``ticks:``): the same lines
on 6.1 and 6.12.  An absolute timer (TFD_TIMER_ABSTIME) is saved as its
expiry on its own clock, a relative one as its time left.  Restart arms it
again: absolute at the same expiry (one that passed while the tree was
down fires at once, with the periods missed counted), relative with the
time that was left; then the unread expirations are set back with
TFD_IOC_SET_TICKS (CONFIG_CHECKPOINT_RESTORE, on in Debian's kernels).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from pyckpt import syscalls
from pyckpt.abi import FileKind, HdrType, lib
from pyckpt.errors import RestartError
from pyckpt.kinds.base import (
    Collector,
    FdRef,
    Kind,
    Objects,
    Plan,
    Reader,
    Writer,
    extra,
)
from pyckpt.model import File, Image
from pyckpt.records import Layout, Record, bad

NSEC = 1_000_000_000
TFD_TIMER_ABSTIME = 1
TFD_TIMER_CANCEL_ON_SET = 2
CLOCK_REALTIME_ALARM = 8
CLOCK_BOOTTIME_ALARM = 9
# the clocks timerfd_create() accepts
CLOCKS = {
    time.CLOCK_REALTIME: "REALTIME",
    time.CLOCK_MONOTONIC: "MONOTONIC",
    time.CLOCK_BOOTTIME: "BOOTTIME",
    CLOCK_REALTIME_ALARM: "REALTIME_ALARM",
    CLOCK_BOOTTIME_ALARM: "BOOTTIME_ALARM",
}
REALTIME_CLOCKS = (time.CLOCK_REALTIME, CLOCK_REALTIME_ALARM)
# what clock_gettime() reads for an alarm clock (the alarm clocks need an
# RTC device to be read directly; they count the same time)
_READ_CLOCK = {
    CLOCK_REALTIME_ALARM: time.CLOCK_REALTIME,
    CLOCK_BOOTTIME_ALARM: time.CLOCK_BOOTTIME,
}
_TIMER_FLAGS = TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET

_FIELD = {
    "clockid": re.compile(r"^clockid:\s*(\d+)\s*$", re.MULTILINE),
    "ticks": re.compile(r"^ticks:\s*(\d+)\s*$", re.MULTILINE),
    "flags": re.compile(r"^settime flags:\s*([0-7]+)\s*$", re.MULTILINE),
}


@dataclass
class Timerfd:
    """TIMERFD record: a timerfd's clock and its last timerfd_settime()."""

    clockid: int
    flags: int = 0  # TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET
    ticks: int = 0  # expirations not read yet
    value: tuple[int, int] = (0, 0)  # absolute expiry or time left; 0: disarmed
    interval: tuple[int, int] = (0, 0)

    @property
    def armed(self) -> bool:
        return self.value != (0, 0)


def _ns(t: tuple[int, int]) -> int:
    return t[0] * NSEC + t[1]


def _ts(ns: int) -> tuple[int, int]:
    return divmod(ns, NSEC)


def parse_fdinfo(fdinfo: str) -> dict[str, int]:
    """clockid, ticks and settime flags of a timerfd's fdinfo; ValueError
    when one is missing."""
    out = {}
    for key, rx in _FIELD.items():
        m = rx.search(fdinfo)
        if m is None:
            raise ValueError(f"no {key} in its fdinfo")
        out[key] = int(m[1], 8 if key == "flags" else 10)
    return out


def save(fd: int) -> Timerfd:
    """The state of the timerfd ``fd`` (the tree is frozen; the timer runs)."""
    left, interval = syscalls.timerfd_gettime(fd)
    # after gettime: it folded missed periods into ticks
    info = parse_fdinfo(_read_fdinfo(fd))
    clockid = info["clockid"]
    flags = info["flags"] & _TIMER_FLAGS
    value = left
    if flags & TFD_TIMER_ABSTIME and left != (0, 0):
        now = syscalls.clock_gettime_ns(_READ_CLOCK.get(clockid, clockid))
        value = _ts(now + _ns(left))
    return Timerfd(clockid, flags, info["ticks"], value, interval)


def _read_fdinfo(fd: int) -> str:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return f.read()


def make(state: Timerfd, f_flags: int) -> int:
    """A new timerfd (close-on-exec) armed as saved, its ticks set back."""
    flags = os.O_CLOEXEC | (f_flags & os.O_NONBLOCK)
    fd = syscalls.timerfd_create(state.clockid, flags)
    try:
        syscalls.timerfd_settime(fd, state.flags, state.value, state.interval)
        if state.ticks:
            # settime zeroed the count; an absolute timer already past may
            # have fired since: its expirations add to the saved ones
            now = parse_fdinfo(_read_fdinfo(fd))["ticks"]
            syscalls.timerfd_set_ticks(fd, state.ticks + now)
    except BaseException:
        os.close(fd)
        raise
    return fd


def summary(state: Timerfd) -> str:
    clock = CLOCKS.get(state.clockid, str(state.clockid))
    if not state.armed:
        what = "disarmed"
    elif state.flags & TFD_TIMER_ABSTIME:
        what = f"at {_fmt(state.value)}"
    else:
        what = f"in {_fmt(state.value)}"
    if state.interval != (0, 0):
        what += f" every {_fmt(state.interval)}"
    if state.flags & TFD_TIMER_CANCEL_ON_SET:
        what += " cancel-on-set"
    if state.ticks:
        what += f" ticks {state.ticks}"
    return f"{clock} {what}"


def _fmt(t: tuple[int, int]) -> str:
    return f"{t[0]}.{t[1]:09d}s"


def _check_timerfd(rec: Record, name: str) -> None:
    f = rec.fields
    if f["objref"] <= 0:
        raise bad(rec, name, f"objref {f['objref']} <= 0")
    if f["clockid"] not in CLOCKS:
        raise bad(rec, name, f"clockid {f['clockid']}: not a timerfd clock")
    if f["flags"] & ~lib.CKPT_TFD_FLAGS:
        raise bad(rec, name, f"unknown flags {f['flags']:#x}")
    if f["flags"] & lib.CKPT_TFD_CANCEL_ON_SET and (
        not f["flags"] & lib.CKPT_TFD_ABSTIME or f["clockid"] not in REALTIME_CLOCKS
    ):
        raise bad(
            rec,
            name,
            "flags: CANCEL_ON_SET without ABSTIME on a REALTIME clock",
        )
    for key in ("value", "interval"):
        sec, nsec = f[f"{key}_sec"], f[f"{key}_nsec"]
        if sec < 0:
            raise bad(rec, name, f"{key}_sec {sec} < 0")
        if not 0 <= nsec <= lib.CKPT_NSEC_MAX:
            raise bad(rec, name, f"{key}_nsec {nsec} outside 0..{lib.CKPT_NSEC_MAX}")


_FLAGS = (
    (TFD_TIMER_ABSTIME, "CKPT_TFD_ABSTIME"),
    (TFD_TIMER_CANCEL_ON_SET, "CKPT_TFD_CANCEL_ON_SET"),
)


def _to_image(flags: int) -> int:
    return sum(getattr(lib, c) for bit, c in _FLAGS if flags & bit)


def _from_image(flags: int) -> int:
    return sum(bit for bit, c in _FLAGS if flags & getattr(lib, c))


class TimerfdKind(Kind):
    name = "timerfd"
    reparse = True
    kinds = (FileKind.TIMERFD,)
    reported = frozenset({FileKind.ANON})
    records = ((HdrType.TIMERFD, Layout("struct ckpt_hdr_timerfd"), _check_timerfd),)

    def claims(self, kind: FileKind, r: FdRef) -> bool:
        return r.link == "anon_inode:[timerfd]"

    def checkpoint(self, col: Collector, f: File, r: FdRef) -> bool:
        try:
            state = save(r.local)
        except (OSError, ValueError) as e:
            self.problem(col, r, str(e))
            return False
        if state.clockid not in CLOCKS:
            self.problem(col, r, f"unknown clock {state.clockid}")
            return False
        f.kind = FileKind.TIMERFD
        f.extra = state
        return True

    def write_file(self, w: Writer, image: Image, f: File, tag: int) -> None:
        t = extra(f, Timerfd)
        w.add(
            HdrType.TIMERFD,
            tag,
            {
                "objref": f.objref,
                "clockid": t.clockid,
                "flags": _to_image(t.flags),
                "ticks": t.ticks,
                "value_sec": t.value[0],
                "value_nsec": t.value[1],
                "interval_sec": t.interval[0],
                "interval_nsec": t.interval[1],
            },
        )

    def read_file(self, p: Reader, image: Image, f: File, rec: Record) -> None:
        r = p.child(rec, HdrType.TIMERFD, "after a TIMERFD file")
        t = r.fields
        f.extra = Timerfd(
            clockid=t["clockid"],
            flags=_from_image(t["flags"]),
            ticks=t["ticks"],
            value=(t["value_sec"], t["value_nsec"]),
            interval=(t["interval_sec"], t["interval_nsec"]),
        )

    def check_model(self, image: Image) -> None:
        for f in image.files.values():
            if f.kind == FileKind.TIMERFD:
                extra(f, Timerfd)

    def restore(self, objs: Objects, files: list[File], plan: Plan) -> None:
        for f in files:
            t = extra(f, Timerfd)
            try:
                fd = objs.keep(make(t, f.f_flags))
            except OSError as e:
                raise RestartError(
                    f"objref {f.objref}: timerfd ({summary(t)}): {e}"
                ) from e
            objs.insert(f.objref, fd)
            objs.done()

    def describe(self, f: File) -> str:
        t = f.extra
        return f"timerfd {summary(t)}" if isinstance(t, Timerfd) else "timerfd"


KIND = TimerfdKind()
