"""The SIGNALFD, TIMERFD and CONTENTS records: round trip, show, and every
malformed value refused with an ImageError naming record and field."""

from __future__ import annotations

import os
import signal
import time

import pytest
from test_image import build, find, raises, specs

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


@pytest.mark.parametrize(
    ("n", "field", "value", "fragment"),
    [
        (0, "objref", 0, "CONTENTS record: objref 0 <= 0"),
        (0, "seals", 0x40, "CONTENTS record: unknown seals 0x40"),
        (0, "same_as", -2, "same_as -2: not another file"),
        (0, "same_as", 4, "same_as 4: not another file"),
        (1, "same_as", 0, "data_len"),  # no data of its own: fine, see below
        (1, "same_as", 1, "same_as 1 is no earlier MEMFD file"),
        (1, "seals", 1, "same_as 4 with seals or data of its own"),
        (2, "seals", 1, "CONTENTS record: seals on a DELETED file"),
        (0, "objref", 5, "CONTENTS record: objref 5 differs from its FILE's 4"),
    ],
)
def test_contents_refused(
    data: bytes, n: int, field: str, value: int, fragment: str
) -> None:
    if fragment == "data_len":
        # a later file on the inode with same_as 0 and no data is valid
        sp = specs(data)
        i = [j for j, s in enumerate(sp) if s.type == HdrType.CONTENTS][n]
        sp[i].fields[field] = value
        Image.from_bytes(build(sp)[0])
        return
    _bad(data, HdrType.CONTENTS, field, value, fragment, n)


def test_contents_more_data_than_size(data: bytes) -> None:
    sp = specs(data)
    i = find(sp, HdrType.CONTENTS, objref=6)
    sp[i].var["data"] = b"thirteen byte"
    built, offsets = build(sp)
    raises(built, offsets[i], "data_len 13 above its FILE's st_size 12")


def test_same_as_on_another_inode(data: bytes) -> None:
    sp = specs(data)
    i = find(sp, HdrType.FILE, objref=5)
    sp[i].fields["st_ino"] = 100
    built, offsets = build(sp)
    raises(built, offsets[i + 1], "same_as 4 is no earlier MEMFD file")


def test_record_missing_after_its_file(data: bytes) -> None:
    for rtype in (HdrType.SIGNALFD, HdrType.TIMERFD, HdrType.CONTENTS):
        sp = specs(data)
        i = next(j for j, s in enumerate(sp) if s.type == rtype)
        del sp[i]
        built, offsets = build(sp)
        raises(built, offsets[i], f"where {rtype.name} record is due")


def test_deleted_path_must_be_absolute(data: bytes) -> None:
    sp = specs(data)
    i = find(sp, HdrType.FILE, objref=6)
    sp[i].var["path"] = b"relative/app.log"
    built, offsets = build(sp)
    raises(built, offsets[i], "DELETED file's path is not absolute")


def test_memfd_name_too_long(data: bytes) -> None:
    sp = specs(data)
    i = find(sp, HdrType.FILE, objref=4)
    sp[i].var["path"] = b"n" * 250
    built, offsets = build(sp)
    raises(built, offsets[i], "MEMFD name above 249 bytes")


def test_writer_refuses_missing_state() -> None:
    im = kinds_image()
    im.files[2].extra = None
    with pytest.raises(ValueError, match="Timerfd state missing"):
        im.to_bytes()


def test_restart_limit_on_contents() -> None:
    from pyckpt.errors import RestartError
    from pyckpt.restarter import Limits, _check_limits

    image = kinds_image()  # 11 + 12 bytes of data
    _check_limits(image, Limits(contents_bytes=23))
    with pytest.raises(RestartError, match="23 bytes of file contents.*--max-contents"):
        _check_limits(image, Limits(contents_bytes=22))


@pytest.mark.parametrize(
    ("text", "value"), [("4096", 4096), ("2M", 2 << 20), ("1g", 1 << 30), ("0", 0)]
)
def test_cli_max_file_contents(text: str, value: int) -> None:
    from pyckpt import cli

    args = cli.parse(["checkpoint", "1", "-o", "x.img", "--max-file-contents", text])
    assert cli._options(args).contents_limit == value
    default = cli.parse(["checkpoint", "1", "-o", "x.img"])
    assert cli._options(default).contents_limit == 1 << 20


@pytest.mark.parametrize("text", ["2X", "-1", "2G", "lots"])
def test_cli_max_file_contents_refused(text: str, capsys) -> None:
    from pyckpt import cli

    with pytest.raises(SystemExit):
        cli.parse(["checkpoint", "1", "-o", "x.img", "--max-file-contents", text])
    assert "--max-file-contents" in capsys.readouterr().err
