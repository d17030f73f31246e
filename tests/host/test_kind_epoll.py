"""The epoll kind (pyckpt/kinds/epoll.py): each epoll file's items, found
among the tree's files at checkpoint, written as EPOLL records after every
task, the epoll files made empty with the other files and their items added
by a helper once the targets exist."""

from __future__ import annotations

import copy
import os
import select
import socket
import tracemalloc
from typing import Any

import pytest
from hosthelpers import Collector, LocalRef, Objects, Plan, fd_flags
from test_image import build, find, first, patch, raises, rich_image, specs

from pyckpt.abi import FileKind, FMode, HdrType, lib
from pyckpt.errors import RestartError
from pyckpt.image import Fd, File, Head, Image, Record, Task, iter_records
from pyckpt.kinds import epoll as ek
from pyckpt.kinds.epoll import Epoll, EpollItem, EpollItems, epolls
from pyckpt.kinds.eventfd import Eventfd
from pyckpt.show import summary
from pyckpt.syscalls import epoll_add

KIND = ek.KIND
RW = FMode.READ | FMode.WRITE
IN, OUT = select.EPOLLIN, select.EPOLLOUT
# what the kernel adds to every item's events (and fdinfo shows)
ALWAYS = select.EPOLLERR | select.EPOLLHUP


@pytest.fixture(scope="module")
def data() -> bytes:
    return rich_image().to_bytes()


@pytest.fixture(scope="module")
def records(data: bytes) -> list[Record]:
    return list(iter_records(data))


def head() -> Head:
    return Head(
        1.5,
        "Linux",
        "6.1.0-test",
        "#1",
        "x86_64",
        lib.CKPT_FORMAT_VERSION,
        lib.CKPT_ABI_VERSION,
    )


def image_of(files: list[File], sets: list[Epoll]) -> Image:
    fds = [Fd(i, f.objref) for i, f in enumerate(files)]
    return Image(
        head=head(),
        tasks=[Task(5, 1, 5, 5, "t", ["t"], "/", fds)],
        files={f.objref: f for f in files},
        extra={"epoll": {e.objref: e for e in sets}},
    )


# ---- the EPOLL record ------------------------------------------------------------


def test_round_trip_packed_items() -> None:
    files = [
        File(1, FileKind.EPOLL, os.O_RDWR, RW),
        File(2, FileKind.EVENTFD, os.O_RDWR, RW, extra=Eventfd()),
        File(3, FileKind.EPOLL, os.O_RDWR | os.O_NONBLOCK, RW),
    ]
    items = [EpollItem(2, 7, IN, 2**64 - 1), EpollItem(3, 7, OUT, 0)]
    img = image_of(files, [Epoll(1, items), Epoll(3, [])])
    data = img.to_bytes()
    again = Image.from_bytes(data)
    assert again == img
    got = epolls(again)
    assert isinstance(got[1].items, EpollItems)  # kept packed
    assert got[1].items == items and list(got[3].items) == []
    assert again.to_bytes() == data
    recs = [r for r in iter_records(data) if r.type == HdrType.EPOLL]
    # after every task, in objref order, each under its own FILE
    assert [r.fields["objref"] for r in recs] == [1, 3]
    want = [
        {"target": 2, "tfd": 7, "events": IN, "data": 2**64 - 1},
        {"target": 3, "tfd": 7, "events": OUT, "data": 0},
    ]
    assert recs[0].fields["items"] == want  # iter_records' unpacked view
    assert ek.unpack_items(got[1].items._raw) == want  # type: ignore[union-attr]
    assert KIND.trailers == (HdrType.EPOLL,)


def test_epoll_items_is_a_sequence() -> None:
    items = [EpollItem(2, i, IN, i * 3) for i in range(5)]
    img = image_of(
        [
            File(1, FileKind.EPOLL, 0, RW),
            File(2, FileKind.EVENTFD, 0, RW, extra=Eventfd()),
        ],
        [Epoll(1, items)],
    )
    packed = epolls(Image.from_bytes(img.to_bytes()))[1].items
    assert isinstance(packed, EpollItems)
    assert len(packed) == 5 and list(packed) == items
    assert packed[-1] == items[4] and packed[1:4:2] == [items[1], items[3]]
    with pytest.raises(IndexError):
        packed[5]
    with pytest.raises(IndexError):
        packed[-6]
    assert packed == items and packed != items[:4]
    assert repr(packed) == f"EpollItems({items!r})"
    assert packed.__eq__(3) is NotImplemented


def test_epoll_checks(data: bytes, records: list[Record]) -> None:
    # moved from test_image.py
    ep = first(records, HdrType.EPOLL)
    for objref in (99, 5, 3):  # nothing, a REG file, a pipe
        bad = patch(data, ep, "objref", objref)
        raises(bad, ep.offset, f"EPOLL record: objref {objref} is not an EPOLL file")
    sp = specs(data)
    e = find(sp, HdrType.EPOLL)
    for target, frag in ((99, "names no file"), (3, "names no file"), (0, "<= 0")):
        bad = copy.deepcopy(sp)
        bad[e].var["items"][1]["target"] = target
        built, offsets = build(bad)
        raises(built, offsets[e], f"EPOLL record: item 1: target {target}"[:29])
        raises(built, offsets[e], frag)
    bad = copy.deepcopy(sp)
    bad[e].var["items"].append(dict(bad[e].var["items"][0]))
    built, offsets = build(bad)
    raises(built, offsets[e], "item 2: target 2 fd 3 twice")
    bad = copy.deepcopy(sp)
    bad.insert(e + 1, copy.deepcopy(bad[e]))
    built, offsets = build(bad)
    raises(built, offsets[e + 1], "EPOLL record: objref 9 defined twice")
    # EPOLL among the tasks: not where the grammar has it
    bad = copy.deepcopy(sp)
    moved = bad.pop(e)
    bad.insert(find(bad, HdrType.TASK, pid=103), moved)
    built, offsets = build(bad)
    raises(built, offsets[find(bad, HdrType.EPOLL)], "EPOLL record where TASK")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        # moved from test_image.py's test_writer_refuses
        (lambda i: epolls(i).update({5: Epoll(5)}), r"epolls \[5\] are not EPOLL"),
        (lambda i: epolls(i).update({40: Epoll(40)}), r"epolls \[40\] are not EPOLL"),
        (lambda i: epolls(i).update({9: Epoll(1)}), r"Image.epolls\[9\] has objref 1"),
    ],
)
def test_writer_refuses(change: Any, fragment: str) -> None:
    img = rich_image()
    change(img)
    with pytest.raises(ValueError, match=fragment):
        img.to_bytes()


def big_epoll_image(n: int) -> bytes:
    """One task, one epoll, one target, n items (distinct tfds)."""
    files = {
        1: File(1, FileKind.EPOLL, os.O_RDWR, RW),
        2: File(2, FileKind.EVENTFD, os.O_RDWR, RW, extra=Eventfd()),
    }
    task = Task(10, 1, 10, 10, "t", ["t"], "/", [Fd(0, 1), Fd(1, 2)])
    items = [EpollItem(2, i, 1, i) for i in range(n)]
    img = Image(
        head=head(), tasks=[task], files=files, extra={"epoll": {1: Epoll(1, items)}}
    )
    return img.to_bytes()


def test_epoll_record_memory_is_linear() -> None:
    """A maximal EPOLL record (24 MiB) used to take 425 MiB to decode; the
    reader now keeps it packed: peak memory within 4x the image."""
    data = big_epoll_image(lib.CKPT_EPOLL_ITEMS_MAX)
    assert len(data) > 24 << 20
    tracemalloc.start()
    try:
        img = Image.from_bytes(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(data), f"peak {peak >> 20} MiB for {len(data) >> 20} MiB"
    items = epolls(img)[1].items
    assert len(items) == lib.CKPT_EPOLL_ITEMS_MAX
    assert items[-1] == EpollItem(
        2, lib.CKPT_EPOLL_ITEMS_MAX - 1, 1, lib.CKPT_EPOLL_ITEMS_MAX - 1
    )


def test_packed_items_write_back_identically() -> None:
    data = big_epoll_image(1000)
    img = Image.from_bytes(data)
    assert img.to_bytes() == data
    assert epolls(img)[1].items == [EpollItem(2, i, 1, i) for i in range(1000)]


def test_show() -> None:
    img = rich_image()
    assert KIND.describe(img.files[9]) == "epoll"
    assert KIND.details(img) == [
        "epoll 9: 2 items",
        "  target 2 tfd 3 events EPOLLIN data 0xdeadbeef",
        "  target 8 tfd 6 events EPOLLIN|EPOLLOUT data 0xffffffffffffffff",
    ]
    lines = summary(img).splitlines()
    assert "  fd 7 -> objref 9 epoll read+write O_RDWR" in lines
    assert "epolls:" in lines


# ---- checkpoint ----------------------------------------------------------------


def _kcmp_works() -> bool:
    ep = select.epoll()
    e = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        ep.register(e, IN)
        return ek._kcmp_epoll_tfd(os.getpid(), e, os.getpid(), ep.fileno(), e, 0)
    except OSError:
        return False
    finally:
        ep.close()
        os.close(e)


needs_kcmp = pytest.mark.skipif(
    not _kcmp_works(), reason="kcmp(KCMP_EPOLL_TFD) not available on this kernel"
)


def test_claims_and_checkpoint() -> None:
    ep = select.epoll()
    e = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        assert KIND.claims(FileKind.ANON, LocalRef(ep.fileno()))  # type: ignore[arg-type]
        assert not KIND.claims(FileKind.ANON, LocalRef(e))  # type: ignore[arg-type]
        f = File(1, FileKind.ANON, os.O_RDWR, RW)
        assert KIND.checkpoint(Collector(), f, LocalRef(ep.fileno()))  # type: ignore[arg-type]
        assert f.kind == FileKind.EPOLL
    finally:
        ep.close()
        os.close(e)


def _collect(refs: dict[int, LocalRef]) -> Collector:
    col = Collector(image=Image(head=head()), first=dict(refs))
    col.files = [
        File(o, FileKind.EPOLL if "eventpoll" in r.link else FileKind.EVENTFD, 0, RW)
        for o, r in refs.items()
    ]
    KIND.collect(col)  # type: ignore[arg-type]
    return col


@needs_kcmp
def test_collect_finds_targets_by_number_and_by_search() -> None:
    ep = select.epoll()
    a = os.eventfd(0, os.EFD_CLOEXEC)
    b = os.eventfd(0, os.EFD_CLOEXEC)
    moved = -1
    try:
        epoll_add(ep.fileno(), a, IN, 0xA)
        epoll_add(ep.fileno(), b, IN | OUT, 2**64 - 1)
        # b's item keeps its number, but b now lives at another fd only
        moved = os.dup(b)
        os.close(b)
        refs = {
            1: LocalRef(ep.fileno(), 1),
            2: LocalRef(a, 2),
            3: LocalRef(moved, 3),
        }
        col = _collect(refs)
        assert col.problems == []
        got = sorted(epolls(col.image)[1].items, key=lambda i: i.target)
        assert got == [
            EpollItem(2, a, IN | ALWAYS, 0xA),
            EpollItem(3, b, IN | OUT | ALWAYS, 2**64 - 1),
        ]
    finally:
        ep.close()
        os.close(a)
        if moved >= 0:
            os.close(moved)


@needs_kcmp
def test_collect_two_items_with_one_number() -> None:
    """An item's number closed and taken by another file that was added
    again: two items with one tfd, told apart by kcmp's toff."""
    ep = select.epoll()
    a = os.eventfd(0, os.EFD_CLOEXEC)
    keep = b = -1
    try:
        epoll_add(ep.fileno(), a, IN, 1)
        keep = os.dup(a)
        b = os.eventfd(0, os.EFD_CLOEXEC)
        os.dup2(b, a)  # a's number is b's file now
        epoll_add(ep.fileno(), a, OUT, 2)
        refs = {1: LocalRef(ep.fileno(), 1), 2: LocalRef(keep, 2), 3: LocalRef(a, 3)}
        col = _collect(refs)
        assert col.problems == []
        got = sorted(epolls(col.image)[1].items, key=lambda i: i.target)
        assert got == [
            EpollItem(2, a, IN | ALWAYS, 1),
            EpollItem(3, a, OUT | ALWAYS, 2),
        ]
    finally:
        ep.close()
        for fd in (a, keep, b):
            if fd >= 0:
                os.close(fd)


@needs_kcmp
def test_collect_reports_a_target_outside_the_tree() -> None:
    ep = select.epoll()
    a = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        epoll_add(ep.fileno(), a, IN, 0)
        col = _collect({1: LocalRef(ep.fileno(), 1)})  # a is not in the tree
        assert len(col.problems) == 1
        why = col.problems[0]
        assert f"fd {ep.fileno()}: checkpoint leak: epoll target" in why
        assert f"(original fd {a}) is not open in the tree" in why
        assert f"; held outside by pid {os.getpid()}" in why
        assert list(epolls(col.image)[1].items) == []
    finally:
        ep.close()
        os.close(a)


# ---- restart -------------------------------------------------------------------


def test_check() -> None:
    img = rich_image()
    KIND.check([img.files[9]], Plan(img))  # type: ignore[arg-type]
    for sets, why in (
        ({5: Epoll(5)}, "epoll record 5: not an epoll file"),
        ({9: Epoll(9, [EpollItem(40, 3, IN, 0)])}, "item target 40 tfd 3 invalid"),
        ({9: Epoll(9, [EpollItem(2, -1, IN, 0)])}, "item target 2 tfd -1 invalid"),
        ({9: Epoll(9, [EpollItem(2, 1024, IN, 0)])}, "item target 2 tfd 1024"),
    ):
        bad = rich_image()
        bad.extra["epoll"] = sets
        with pytest.raises(RestartError, match=why):
            KIND.check([bad.files[9]], Plan(bad, nofile=1024))  # type: ignore[arg-type]


def test_restore_makes_empty_epolls() -> None:
    files = [
        File(1, FileKind.EPOLL, os.O_RDWR, RW),
        File(2, FileKind.EPOLL, os.O_RDWR | os.O_NONBLOCK, RW),
    ]
    objs = Objects()
    try:
        KIND.restore(objs, files, Plan(image_of(files, [])))  # type: ignore[arg-type]
        got = objs.inserted
        assert objs.objects == [[1], [2]]
        assert sorted(objs.kept) == sorted(got.values())
        for fd in got.values():
            assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventpoll]"
            assert "tfd:" not in _fdinfo(fd)
            assert not os.get_inheritable(fd)
        assert fd_flags(got[2]) & os.O_NONBLOCK
        assert not fd_flags(got[1]) & os.O_NONBLOCK
    finally:
        objs.close()


class SentCtx:
    """A Context stand-in for the late step's helper: fetch_many gives the
    objects' fds, sent beforehand over a socket it keeps (its fileno)."""

    def __init__(self, objects: dict[int, int]) -> None:
        self.ours, self.theirs = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_SEQPACKET
        )
        self.n = len(objects)
        for objref, fd in objects.items():
            socket.send_fds(self.ours, [objref.to_bytes(4, "little")], [fd])
        self.fetched: list[int] = []

    def fileno(self) -> int:
        return self.theirs.fileno()

    def fetch_many(self, refs: list[int]) -> list[int]:
        got = {}
        for _ in range(self.n):
            msg, fds, _flags, _addr = socket.recv_fds(self.theirs, 4, 1)
            got[int.from_bytes(msg, "little")] = fds[0]
        return [got[r] for r in refs]

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


def _fdinfo(fd: int) -> str:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return f.read()


def _items(fd: int) -> list[tuple[int, int, int]]:
    return [
        (int(m[1]), int(m[2], 16), int(m[3], 16))
        for m in ek._EPOLL_ITEM.finditer(_fdinfo(fd))
    ]


def test_after_spawn_adds_the_items() -> None:
    files = [
        File(1, FileKind.EPOLL, os.O_RDWR, RW),
        File(2, FileKind.EVENTFD, os.O_RDWR, RW),
        File(3, FileKind.EVENTFD, os.O_RDWR, RW),
        File(4, FileKind.EPOLL, os.O_RDWR, RW),
    ]
    items = [EpollItem(2, 7, IN, 2**64 - 1), EpollItem(3, 40, IN | OUT, 0xAB)]
    img = image_of(files, [Epoll(1, items), Epoll(4, [])])
    objs = Objects()
    KIND.restore(objs, [files[0], files[3]], Plan(img))  # type: ignore[arg-type]
    ep = objs.inserted[1]
    a = os.eventfd(5, os.EFD_CLOEXEC)
    b = os.eventfd(0, os.EFD_CLOEXEC)
    ctx = SentCtx({1: ep, 2: a, 3: b})
    try:
        KIND.after_spawn(ctx, img, Plan(img), 60.0)  # type: ignore[arg-type]
        # each target added under its recorded number, events and data
        assert sorted(_items(ep)) == [
            (7, IN | ALWAYS, 2**64 - 1),
            (40, IN | OUT | ALWAYS, 0xAB),
        ]
        assert _items(objs.inserted[4]) == []  # no items: not sent to the helper
        # the items are live: a is readable, b writable
        ready = select.epoll.fromfd(os.dup(ep))
        try:
            events = dict(ready.poll(0))
        finally:
            ready.close()
        # select.epoll reports data's low 32 bits (signed) as the fd
        assert events == {-1: IN, 0xAB: OUT}
    finally:
        ctx.close()
        objs.close()
        os.close(a)
        os.close(b)


def test_after_spawn_reports_a_refused_item(tmp_path: Any) -> None:
    files = [File(1, FileKind.EPOLL, os.O_RDWR, RW), File(2, FileKind.REG, 0, RW)]
    img = image_of(files, [Epoll(1, [EpollItem(2, 5, IN, 0)])])
    objs = Objects()
    KIND.restore(objs, files[:1], Plan(img))  # type: ignore[arg-type]
    p = tmp_path / "f"
    p.write_bytes(b"")
    reg = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    ctx = SentCtx({1: objs.inserted[1], 2: reg})
    try:
        # a regular file cannot be watched: the helper says why
        with pytest.raises(RestartError) as e:
            KIND.after_spawn(ctx, img, Plan(img), 60.0)  # type: ignore[arg-type]
        assert str(e.value) == (
            "epoll items: epoll 1: add target 2 as tfd 5 events 0x1: "
            "epoll_ctl: Operation not permitted"
        )
    finally:
        ctx.close()
        objs.close()
        os.close(reg)


def test_after_spawn_without_items_runs_no_helper() -> None:
    class NoCtx:
        def fileno(self) -> int:
            raise AssertionError("no helper: nothing to fetch")

    img = image_of([File(1, FileKind.EPOLL, 0, RW)], [Epoll(1, [])])
    KIND.after_spawn(NoCtx(), img, Plan(img), 60.0)  # type: ignore[arg-type]
    assert list(epolls(img)[1].items) == []
