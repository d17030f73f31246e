"""The SIGNALFD, TIMERFD and CONTENTS records in one image: round trip,
show, a record missing after its FILE, a kind's state missing.  Each
record's own malformed values are refused in its kind's test_kind_*.py
(which build on kinds_image() and _bad() from here)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from test_image import build, raises, specs

from pyckpt import show
from pyckpt.abi import FileKind, FMode, HdrType, lib
from pyckpt.image import Fd, File, Head, Image, Task
from pyckpt.kinds.memfd import Contents
from pyckpt.kinds.signalfd import Signalfd
from pyckpt.kinds.timerfd import TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET, Timerfd

RW = FMode.READ | FMode.WRITE
REG = 0o100000


def kinds_image() -> Image:
    head = Head(
        1.5,
        "Linux",
        "6.12",
        "#1",
        "x86_64",
        lib.CKPT_FORMAT_VERSION,
        lib.CKPT_ABI_VERSION,
    )
    mask = (1 << (signal.SIGCHLD - 1)) | (1 << (signal.SIGTERM - 1))
    files = [
        File(1, FileKind.SIGNALFD, os.O_RDWR | os.O_NONBLOCK, RW, extra=Signalfd(mask)),
        File(
            2,
            FileKind.TIMERFD,
            os.O_RDWR,
            RW,
            extra=Timerfd(time.CLOCK_MONOTONIC, 0, 3, (1, 5), (0, 250_000_000)),
        ),
        File(
            3,
            FileKind.TIMERFD,
            os.O_RDWR,
            RW,
            extra=Timerfd(
                time.CLOCK_REALTIME,
                TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET,
                0,
                (1_800_000_000, 0),
            ),
        ),
        File(
            4,
            FileKind.MEMFD,
            os.O_RDWR,
            RW,
            pos=3,
            path="shm name",
            st_mode=REG | 0o640,
            st_size=1 << 20,
            st_dev=7,
            st_ino=99,
            extra=Contents(b"sealed data", seals=0xE),
        ),
        File(
            5,
            FileKind.MEMFD,
            os.O_RDONLY,
            FMode.READ,
            path="shm name",
            st_mode=REG | 0o640,
            st_size=1 << 20,
            st_dev=7,
            st_ino=99,
            extra=Contents(same_as=4),
        ),
        File(
            6,
            FileKind.DELETED,
            os.O_WRONLY | os.O_APPEND,
            FMode.WRITE,
            pos=12,
            path="/var/log/app.log",
            st_mode=REG | 0o644,
            st_size=12,
            st_dev=8,
            st_ino=5,
            extra=Contents(b"twelve bytes"),
        ),
    ]
    tasks = [
        Task(10, 1, 10, 10, "sup", ["sup"], "/", [Fd(i + 3, i + 1) for i in range(6)])
    ]
    return Image(head=head, tasks=tasks, files={f.objref: f for f in files})


@pytest.fixture(scope="module")
def data() -> bytes:
    return kinds_image().to_bytes()


def test_round_trip(data: bytes) -> None:
    again = Image.from_bytes(data)
    assert again == kinds_image()
    assert again.to_bytes() == data


def test_show_names_them(data: bytes) -> None:
    text = show.summary(Image.from_bytes(data))
    assert "signalfd [SIGTERM,SIGCHLD]" in text
    assert "timerfd MONOTONIC in 1.000000005s every 0.250000000s ticks 3" in text
    assert "memfd:shm name (1048576 bytes, 11 stored, seals 0xe)" in text
    assert "/var/log/app.log (deleted)" in text


def _bad(
    data: bytes, rtype: HdrType, field: str, value, fragment: str, n: int = 0
) -> None:
    sp = specs(data)
    i = [j for j, s in enumerate(sp) if s.type == rtype][n]
    sp[i].fields[field] = value
    built, offsets = build(sp)
    raises(built, offsets[i], fragment)


def test_record_missing_after_its_file(data: bytes) -> None:
    for rtype in (HdrType.SIGNALFD, HdrType.TIMERFD, HdrType.CONTENTS):
        sp = specs(data)
        i = next(j for j, s in enumerate(sp) if s.type == rtype)
        del sp[i]
        built, offsets = build(sp)
        raises(built, offsets[i], f"where {rtype.name} record is due")


def test_writer_refuses_missing_state() -> None:
    im = kinds_image()
    im.files[2].extra = None
    with pytest.raises(ValueError, match="Timerfd state missing"):
        im.to_bytes()
