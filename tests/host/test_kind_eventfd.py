"""The eventfd kind (pyckpt/kinds/eventfd.py): its counter and EFD_SEMAPHORE
read from fdinfo, kept in the FILE record, made again by eventfd(2)."""

from __future__ import annotations

import os
import select
from dataclasses import dataclass

import pytest
from hosthelpers import Collector, LocalRef, Objects, Plan, fd_flags
from test_image import patch, raises

from pyckpt.abi import FileKind, FMode, HdrType, lib
from pyckpt.errors import RestartError
from pyckpt.image import Fd, File, Head, Image, Task, iter_records
from pyckpt.kinds import eventfd
from pyckpt.kinds.eventfd import Eventfd
from pyckpt.show import summary

KIND = eventfd.KIND
RW = FMode.READ | FMode.WRITE


def efd(
    objref: int, count: int = 0, efd_flags: int = 0, sem_unknown: bool = False
) -> File:
    state = Eventfd(count, efd_flags, sem_unknown)
    return File(objref, FileKind.EVENTFD, os.O_RDWR, RW, extra=state)


def image_of(*files: File) -> Image:
    task = Task(
        5, 1, 5, 5, "t", ["t"], "/", [Fd(i, f.objref) for i, f in enumerate(files)]
    )
    return Image(
        head=Head(1.0, "Linux", "6.1.0-x", "#1", "x86_64"),
        tasks=[task],
        files={f.objref: f for f in files},
    )


@dataclass
class Said:
    """An FdRef whose fdinfo is given (another kernel's lines)."""

    fdinfo: str
    link: str = "anon_inode:[eventfd]"


# ---- checkpoint ----------------------------------------------------------------


def test_claims_only_eventfds() -> None:
    e = os.eventfd(0, os.EFD_CLOEXEC)
    ep = select.epoll()
    try:
        assert KIND.claims(FileKind.ANON, LocalRef(e))
        assert not KIND.claims(FileKind.ANON, LocalRef(ep.fileno()))
    finally:
        os.close(e)
        ep.close()
    assert KIND.reported == frozenset({FileKind.ANON})
    assert KIND.kinds == (FileKind.EVENTFD,)


@pytest.mark.parametrize(
    ("count", "flags"),
    [(0, 0), (42, 0), (0xFFFF_FFFF, os.EFD_SEMAPHORE), (7, os.EFD_SEMAPHORE)],
)
def test_checkpoint_reads_this_kernels_fdinfo(count: int, flags: int) -> None:
    fd = os.eventfd(count, os.EFD_CLOEXEC | os.EFD_NONBLOCK | flags)
    try:
        f = File(1, FileKind.ANON, os.O_RDWR, RW)
        col = Collector()
        assert KIND.checkpoint(col, f, LocalRef(fd))  # type: ignore[arg-type]
        assert f.kind == FileKind.EVENTFD and f.extra.count == count
        if "eventfd-semaphore" in LocalRef(fd).fdinfo:
            assert f.extra == Eventfd(count, flags, sem_unknown=False)
        else:  # 6.1: the flag is not said
            assert f.extra == Eventfd(count, 0, sem_unknown=True)
        # reading fdinfo consumed nothing
        if count:
            assert os.eventfd_read(fd) == (1 if flags else count)
        else:
            with pytest.raises(BlockingIOError):
                os.eventfd_read(fd)
        assert not col.problems
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("fdinfo", "count", "flags", "unknown"),
    [
        # 6.1: count in hex, padded, no semaphore line
        ("pos:\t0\nflags:\t02\neventfd-count:               ff\n", 255, 0, True),
        ("eventfd-count: 10\neventfd-id: 3\neventfd-semaphore: 1\n", 16, 1, False),
        ("eventfd-count: 0\neventfd-semaphore: 0\n", 0, 0, False),
        ("pos:\t0\n", 0, 0, True),  # no count line: 0
    ],
)
def test_checkpoint_parses_fdinfo(
    fdinfo: str, count: int, flags: int, unknown: bool
) -> None:
    f = File(1, FileKind.ANON, os.O_RDWR, RW)
    assert KIND.checkpoint(Collector(), f, Said(fdinfo))  # type: ignore[arg-type]
    assert f.extra == Eventfd(count, flags, unknown)


# ---- the image -----------------------------------------------------------------


def test_round_trip_in_the_file_record() -> None:
    files = (
        efd(1, 2**64 - 2, efd_flags=os.EFD_SEMAPHORE),
        efd(2, 0, sem_unknown=True),
        efd(3, 42),
    )
    data = image_of(*files).to_bytes()
    again = Image.from_bytes(data)
    assert again.files == {f.objref: f for f in files}
    assert again.to_bytes() == data
    # no record of its own: the FILE record carries it
    recs = [r for r in iter_records(data) if r.type == HdrType.FILE]
    assert [r.fields["count"] for r in recs] == [2**64 - 2, 0, 42]
    assert [r.fields["efd_flags"] for r in recs] == [os.EFD_SEMAPHORE, 0, 0]
    assert [r.fields["flags"] & lib.CKPT_FILE_EFD_SEM_UNKNOWN for r in recs] == [
        0,
        lib.CKPT_FILE_EFD_SEM_UNKNOWN,
        0,
    ]
    assert KIND.records == ()
    assert KIND.file_fields(files[1]) == {
        "count": 0,
        "efd_flags": 0,
        "flags": lib.CKPT_FILE_EFD_SEM_UNKNOWN,
    }
    assert KIND.file_flags == (("EFD_SEM_UNKNOWN", lib.CKPT_FILE_EFD_SEM_UNKNOWN),)


def test_its_flag_on_another_kinds_file_is_refused() -> None:
    reg = File(2, FileKind.REG, 0, FMode.READ, path="/x")
    data = image_of(efd(1, 5), reg).to_bytes()
    rec = [r for r in iter_records(data) if r.type == HdrType.FILE][1]
    bad = patch(data, rec, "flags", lib.CKPT_FILE_EFD_SEM_UNKNOWN)
    raises(bad, rec.offset, "FILE record: EFD_SEM_UNKNOWN on a REG file")


def test_writer_refuses_an_eventfd_without_its_state() -> None:
    img = image_of(efd(1, 5), File(2, FileKind.EVENTFD, os.O_RDWR, RW))
    with pytest.raises(ValueError, match="file 2: Eventfd state missing"):
        img.to_bytes()


def test_show_says_count_and_semaphore() -> None:
    """An eventfd whose EFD_SEMAPHORE the checkpointing kernel did not report
    shows as unknown, not as 'not semaphore' (moved from test_show.py)."""
    img = image_of(efd(1, 3, sem_unknown=True), efd(2, 4, efd_flags=0))
    text = summary(Image.from_bytes(img.to_bytes()))
    assert "count 3 semaphore unknown" in text
    assert "count 4 efd_flags 0x0" in text
    assert "  fd 0 -> objref 1 eventfd count 3 read+write O_RDWR" in text
    assert KIND.describe(efd(9, 12)) == "eventfd count 12"
    assert KIND.details(img) == []


# ---- restart -------------------------------------------------------------------


def test_check_warns_once_for_unknown_semaphores() -> None:
    files = [efd(i, sem_unknown=True) for i in range(1, 8)] + [efd(8)]
    plan = Plan(image_of(*files))
    KIND.check(files, plan)  # type: ignore[arg-type]
    assert plan.warnings == [
        (
            "7 eventfds (objrefs 1, 2, 3, 4, 5 and 2 more) restarted without "
            "EFD_SEMAPHORE: the checkpointing kernel did not say whether it was set"
        )
    ]
    one = Plan(image_of(efd(4, sem_unknown=True)))
    KIND.check([efd(4, sem_unknown=True)], one)  # type: ignore[arg-type]
    assert one.warnings == [
        (
            "1 eventfd (objref 4) restarted without EFD_SEMAPHORE: the "
            "checkpointing kernel did not say whether it was set"
        )
    ]
    known = Plan(image_of(efd(8)))
    KIND.check([efd(8)], known)  # type: ignore[arg-type]
    assert known.warnings == []


def test_restore_count_flags_and_one_object_each() -> None:
    files = [
        efd(1, 5),
        efd(2, 3, efd_flags=os.EFD_SEMAPHORE),
        File(3, FileKind.EVENTFD, os.O_RDWR | os.O_NONBLOCK, RW, extra=Eventfd()),
        efd(4, 2**40 + 3),  # above eventfd(2)'s unsigned int: written after
        efd(5, 2**64 - 2),  # the counter's largest value
        efd(6, 2, efd_flags=0xFF00),  # only EFD_SEMAPHORE is taken
    ]
    objs = Objects()
    try:
        KIND.restore(objs, files, Plan(image_of(*files)))  # type: ignore[arg-type]
        got = objs.inserted
        assert objs.objects == [[1], [2], [3], [4], [5], [6]]
        assert sorted(objs.kept) == sorted(got.values())
        for fd in got.values():
            assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
            assert not os.get_inheritable(fd)  # EFD_CLOEXEC
        assert os.eventfd_read(got[1]) == 5
        assert os.eventfd_read(got[2]) == 1  # a semaphore: one at a time
        assert os.eventfd_read(got[2]) == 1
        assert fd_flags(got[3]) & os.O_NONBLOCK
        assert not fd_flags(got[1]) & os.O_NONBLOCK
        with pytest.raises(BlockingIOError):
            os.eventfd_read(got[3])
        assert os.eventfd_read(got[4]) == 2**40 + 3
        assert os.eventfd_read(got[5]) == 2**64 - 2
        assert os.eventfd_read(got[6]) == 2  # not a semaphore
    finally:
        objs.close()


def test_restore_refuses_a_count_the_counter_cannot_hold() -> None:
    objs = Objects()
    try:
        with pytest.raises(RestartError, match=r"objref 7: eventfd count 18446"):
            KIND.restore(objs, [efd(7, 2**64 - 1)], Plan(image_of(efd(7))))  # type: ignore[arg-type]
        assert 7 not in objs.inserted
        assert len(objs.kept) == 1  # closed by the machinery, as on any error
    finally:
        objs.close()
