"""timerfd mechanics on the host (no module): save a timer, make it again."""

from __future__ import annotations

import os
import time

import pytest
from test_kind_records import _bad, kinds_image

from pyckpt import syscalls
from pyckpt.abi import HdrType
from pyckpt.kinds import timerfd as tfd

MS = 1_000_000


def _new(clock: int, flags: int, value_ns: int, interval_ns: int = 0) -> int:
    fd = syscalls.timerfd_create(clock, os.O_CLOEXEC | os.O_NONBLOCK)
    syscalls.timerfd_settime(
        fd, flags, divmod(value_ns, 10**9), divmod(interval_ns, 10**9)
    )
    return fd


def _ns(t: tuple[int, int]) -> int:
    return t[0] * 10**9 + t[1]


def _ticks(fd: int) -> int:
    try:
        return int.from_bytes(os.read(fd, 8), "little")
    except BlockingIOError:
        return 0


@pytest.mark.parametrize(
    "clock", [time.CLOCK_MONOTONIC, time.CLOCK_REALTIME, time.CLOCK_BOOTTIME]
)
def test_relative_keeps_time_left(clock: int) -> None:
    fd = _new(clock, 0, 5000 * MS, 250 * MS)
    try:
        st = tfd.save(fd)
        assert st.clockid == clock and st.flags == 0 and st.ticks == 0
        assert st.interval == (0, 250 * MS)
        assert 4000 * MS < _ns(st.value) <= 5000 * MS
        new = tfd.make(st, os.O_NONBLOCK)
        try:
            left, interval = syscalls.timerfd_gettime(new)
            assert interval == (0, 250 * MS)
            assert _ns(st.value) - 500 * MS < _ns(left) <= _ns(st.value)
            assert tfd.save(new).clockid == clock
        finally:
            os.close(new)
    finally:
        os.close(fd)


def test_disarmed() -> None:
    fd = syscalls.timerfd_create(time.CLOCK_MONOTONIC, 0)
    try:
        st = tfd.save(fd)
        assert not st.armed and st.ticks == 0
        new = tfd.make(st, 0)
        try:
            assert syscalls.timerfd_gettime(new) == ((0, 0), (0, 0))
            assert os.get_blocking(new)
        finally:
            os.close(new)
    finally:
        os.close(fd)


def test_unread_ticks_restored() -> None:
    fd = _new(time.CLOCK_MONOTONIC, 0, 1 * MS, 2 * MS)
    try:
        time.sleep(0.05)
        st = tfd.save(fd)
        # gettime folded every missed period in: far more than one tick
        assert st.ticks >= 10
        new = tfd.make(st, os.O_NONBLOCK)
        try:
            got = _ticks(new)
            assert got >= st.ticks  # the saved ones, plus any since
        finally:
            os.close(new)
        # saving did not consume them
        assert _ticks(fd) >= st.ticks
    finally:
        os.close(fd)


def test_one_shot_expired_keeps_its_tick() -> None:
    fd = _new(time.CLOCK_MONOTONIC, 0, 1 * MS)
    try:
        time.sleep(0.02)
        st = tfd.save(fd)
        assert st.ticks == 1 and not st.armed
        new = tfd.make(st, os.O_NONBLOCK)
        try:
            assert _ticks(new) == 1
            assert _ticks(new) == 0
        finally:
            os.close(new)
    finally:
        os.close(fd)


def test_absolute_saved_as_expiry_and_past_fires_at_once() -> None:
    now = time.clock_gettime_ns(time.CLOCK_REALTIME)
    flags = tfd.TFD_TIMER_ABSTIME | tfd.TFD_TIMER_CANCEL_ON_SET
    fd = _new(time.CLOCK_REALTIME, flags, now + 200 * MS)
    try:
        st = tfd.save(fd)
        assert st.flags == tfd.TFD_TIMER_ABSTIME | tfd.TFD_TIMER_CANCEL_ON_SET
        assert abs(_ns(st.value) - (now + 200 * MS)) < 5 * MS
        time.sleep(0.25)  # "the tree was down" past its expiry
        new = tfd.make(st, os.O_NONBLOCK)
        try:
            assert _ticks(new) == 1  # fired at once
            with open(f"/proc/self/fdinfo/{new}") as f:
                info = tfd.parse_fdinfo(f.read())
            assert info["flags"] == st.flags and info["clockid"] == time.CLOCK_REALTIME
        finally:
            os.close(new)
    finally:
        os.close(fd)


def test_absolute_periodic_counts_missed_periods() -> None:
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    st = tfd.Timerfd(
        time.CLOCK_MONOTONIC,
        tfd.TFD_TIMER_ABSTIME,
        3,
        divmod(now - 100 * MS, 10**9),
        (0, 10 * MS),
    )
    new = tfd.make(st, os.O_NONBLOCK)
    try:
        got = _ticks(new)
        # 3 unread + about 10 periods missed while down
        assert 3 + 9 <= got <= 3 + 14
    finally:
        os.close(new)


def test_fdinfo_missing_line() -> None:
    with pytest.raises(ValueError, match="ticks"):
        tfd.parse_fdinfo("clockid: 1\nsettime flags: 00\n")


def test_summary() -> None:
    st = tfd.Timerfd(time.CLOCK_MONOTONIC, 0, 2, (1, 5), (0, 250 * MS))
    assert tfd.summary(st) == "MONOTONIC in 1.000000005s every 0.250000000s ticks 2"


# ---- the TIMERFD record (moved from test_kind_records.py) --------------------


@pytest.fixture(scope="module")
def data() -> bytes:
    return kinds_image().to_bytes()


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("objref", -1, "TIMERFD record: objref -1 <= 0"),
        ("clockid", 2, "clockid 2: not a timerfd clock"),
        ("clockid", 6, "clockid 6: not a timerfd clock"),
        ("flags", 4, "TIMERFD record: unknown flags 0x4"),
        ("flags", 2, "CANCEL_ON_SET without ABSTIME"),
        ("value_sec", -1, "value_sec -1 < 0"),
        ("value_nsec", 10**9, "value_nsec 1000000000 outside"),
        ("interval_sec", -5, "interval_sec -5 < 0"),
        ("interval_nsec", -1, "interval_nsec -1 outside"),
        ("objref", 1, "TIMERFD record: objref 1 differs from its FILE's 2"),
    ],
)
def test_timerfd_refused(data: bytes, field: str, value: int, fragment: str) -> None:
    _bad(data, HdrType.TIMERFD, field, value, fragment)


def test_timerfd_cancel_on_set_needs_realtime(data: bytes) -> None:
    _bad(data, HdrType.TIMERFD, "clockid", time.CLOCK_MONOTONIC, "CANCEL_ON_SET", 1)
