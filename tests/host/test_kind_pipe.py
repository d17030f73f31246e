"""The pipe kind (pyckpt/kinds/pipe.py): anonymous pipes and named FIFOs,
their ends as FILEs naming the pipe (pipe_objref), the buffer copied without
being consumed into one PIPE record, remade by one pipe2() (or the FIFO's
path behind a holder)."""

from __future__ import annotations

import copy
import fcntl
import os
import select
import stat
from pathlib import Path

import pytest
from hosthelpers import Collector, LocalRef, Objects, Plan, fd_flags
from test_image import build, find, first, patch, raises, rich_image, specs

from pyckpt.abi import FileKind, FMode, HdrType, lib
from pyckpt.device import FileInfo, PipeState
from pyckpt.errors import RestartError
from pyckpt.image import Fd, File, Head, Image, Record, Task, iter_records
from pyckpt.kinds import pipe as pk
from pyckpt.kinds.pipe import Pipe, pipes
from pyckpt.limits import Limits
from pyckpt.show import summary

KIND = pk.KIND
RW = FMode.READ | FMode.WRITE


@pytest.fixture(scope="module")
def data() -> bytes:
    return rich_image().to_bytes()


@pytest.fixture(scope="module")
def records(data: bytes) -> list[Record]:
    return list(iter_records(data))


def end(objref: int, mode: FMode, pipe: int, flags: int = 0, **kw: object) -> File:
    acc = os.O_RDONLY if mode == FMode.READ else os.O_WRONLY
    if mode == RW:
        acc = os.O_RDWR
    kind = kw.pop("kind", FileKind.PIPE)
    return File(objref, kind, acc | flags, mode, pipe_objref=pipe, **kw)  # type: ignore[arg-type]


def image_of(files: list[File], pipe_list: list[Pipe]) -> Image:
    fds = [Fd(i, f.objref) for i, f in enumerate(files)]
    return Image(
        head=Head(
            1.0,
            "Linux",
            "6.12",
            "#1",
            "x86_64",
            lib.CKPT_FORMAT_VERSION,
            lib.CKPT_ABI_VERSION,
        ),
        tasks=[Task(5, 1, 5, 5, "t", ["t"], "/", fds)],
        files={f.objref: f for f in files},
        extra={"pipe": {p.objref: p for p in pipe_list}},
    )


# ---- the PIPE record -------------------------------------------------------------


def test_round_trip_keeps_data_size_and_closed_ends() -> None:
    files = [end(1, FMode.READ, 3), end(2, FMode.WRITE, 3), end(4, FMode.READ, 5)]
    pl = [
        Pipe(3, 65536, bytes(range(256)) * 3),
        Pipe(5, 4096, b"left", no_writer=True, no_reader=False),
    ]
    img = image_of(files, pl)
    data = img.to_bytes()
    again = Image.from_bytes(data)
    assert again == img
    assert pipes(again) == {3: pl[0], 5: pl[1]}
    assert again.to_bytes() == data
    recs = [r for r in iter_records(data) if r.type == HdrType.PIPE]
    assert [(r.fields["objref"], r.fields["flags"]) for r in recs] == [
        (3, 0),
        (5, lib.CKPT_PIPE_NO_WRITER),
    ]
    # once, after the pipe's first FILE
    by_tag = {r.tag: r for r in iter_records(data)}
    assert [by_tag[r.ptag].fields["objref"] for r in recs] == [1, 4]


def test_pipes_is_the_kinds_state_in_the_image() -> None:
    head = Head(1.0, "a", "b", "c", "d", lib.CKPT_FORMAT_VERSION, lib.CKPT_ABI_VERSION)
    img = Image(head=head)
    assert img.extra == {}
    got = pipes(img)
    assert got == {} and img.extra == {"pipe": got}
    got[3] = Pipe(3, 4096)
    assert pipes(img)[3] is got[3]
    # an empty state read back is no difference
    assert Image.from_bytes(Image(head=head).to_bytes()) == Image(head=head)


def test_pipe_checks(data: bytes, records: list[Record]) -> None:
    # moved from test_image.py
    sp = specs(data)
    f4 = find(sp, HdrType.FILE, objref=4)  # the first end of pipe 3
    assert sp[f4 + 1].type == HdrType.PIPE
    # PIPE missing after a new pipe_objref
    bad = copy.deepcopy(sp)
    del bad[f4 + 1]
    built, offsets = build(bad)
    raises(built, offsets[f4 + 1], "FD record where PIPE record is due")
    # PIPE again for a known pipe, and after a FILE that is no pipe end
    for objref, why in ((2, "its pipe is already defined"), (5, "not a pipe")):
        bad = copy.deepcopy(sp)
        f = find(bad, HdrType.FILE, objref=objref)
        extra = copy.deepcopy(bad[f4 + 1])
        extra.id, extra.ptag = 1000, bad[f].id
        bad.insert(f + 1, extra)
        built, offsets = build(bad)
        raises(built, offsets[f + 1], f"PIPE record after a FILE: {why}")
    # PIPE objref not the FILE's pipe_objref
    bad = copy.deepcopy(sp)
    bad[f4 + 1].fields["objref"] = 30
    built, offsets = build(bad)
    raises(built, offsets[f4 + 1], "PIPE record: objref 30 differs from its FILE's")
    # a pipe_objref that is a file's objref
    bad = copy.deepcopy(sp)
    f2 = find(bad, HdrType.FILE, objref=2)
    bad[f2].fields["pipe_objref"] = 1
    built, offsets = build(bad)
    raises(built, offsets[f2], "FILE record: pipe_objref 1 is a file's objref")
    # a pipe objref that a FILE later claims: pipe 3 renamed 5 (file 5's objref)
    bad = copy.deepcopy(sp)
    for s in bad:
        if s.type == HdrType.FILE and s.fields["pipe_objref"] == 3:
            s.fields["pipe_objref"] = 5
    bad[f4 + 1].fields["objref"] = 5
    built, offsets = build(bad)
    f5 = find(bad, HdrType.FILE, objref=5)
    raises(built, offsets[f5], "FILE record: objref 5 defined twice (first by the PIPE")
    pipe = first(records, HdrType.PIPE)
    raises(patch(data, pipe, "flags", 4), pipe.offset, "PIPE record: unknown flags 0x4")

    raises(patch(data, pipe, "flags", 3 << 2), pipe.offset, "unknown flags 0xc")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        # moved from test_image.py's test_writer_refuses
        (lambda i: pipes(i).pop(7), r"pipe_objref 7 not in Image.pipes"),
        (
            lambda i: pipes(i).update({30: Pipe(30, 4096)}),
            r"pipes \[30\] are referenced",
        ),
        (
            lambda i: pipes(i).update({5: Pipe(5, 4096)}),
            r"objrefs \[5\] are both a file and a pipe",
        ),
        (
            lambda i: pipes(i).update({7: Pipe(8, 4096)}),
            r"Image.pipes\[7\] has objref 8",
        ),
    ],
)
def test_writer_refuses(change, fragment: str) -> None:  # type: ignore[no-untyped-def]
    img = rich_image()
    change(img)
    with pytest.raises(ValueError, match=fragment):
        img.to_bytes()


def test_summary_long_pipe_preview() -> None:
    # moved from test_show.py
    img = rich_image()
    pipes(img)[3].data = b'"\\' + bytes(range(256))
    line = next(li for li in summary(img).splitlines() if li.startswith("  pipe 3:"))
    assert line.startswith(
        '  pipe 3: size 65536, 258 bytes buffered "\\"\\\\\\x00\\x01'
    )
    assert line.endswith('"...')


def test_describe_and_details() -> None:
    img = rich_image()
    assert KIND.describe(img.files[2]) == "pipe:[objref 3]"
    assert KIND.describe(img.files[6]) == "fifo:[objref 7] /run/fifo"
    assert KIND.details(img) == [
        'pipe 3: size 65536, 12 bytes buffered "hello\\x00\\xffworld"',
        'pipe 7: size 4096, 0 bytes buffered ""',
        'pipe 11: size 8192, 8 bytes buffered "orphaned" (no writer)',
    ]
    pipes(img)[7].no_reader = pipes(img)[7].no_writer = True
    assert KIND.details(img)[1].endswith('"" (no reader, no writer)')
    text = summary(img)
    assert "\npipes:\n  pipe 3: size 65536" in text


# ---- checkpoint ----------------------------------------------------------------


def _info(mode: FMode, inode: int) -> FileInfo:
    return FileInfo(FileKind.PIPE, 0, mode, inode, 0)


def test_checkpoint_names_the_pipe() -> None:
    col = Collector(info={2: _info(FMode.READ, 77)})
    f = File(2, FileKind.PIPE, os.O_RDONLY, FMode.READ)
    assert KIND.checkpoint(col, f, LocalRef(0))  # type: ignore[arg-type]
    assert f.pipe_objref == 77 and f.path == "" and not col.problems


def test_checkpoint_refuses_a_deleted_fifo(tmp_path: Path) -> None:
    p = tmp_path / "fifo"
    os.mkfifo(p)
    fd = os.open(p, os.O_RDWR | os.O_CLOEXEC)
    try:
        col = Collector(info={2: _info(RW, 9)})
        f = File(2, FileKind.FIFO, os.O_RDWR, RW)
        assert KIND.checkpoint(col, f, LocalRef(fd))  # type: ignore[arg-type]
        assert (f.path, f.pipe_objref) == (str(p), 9)
        os.unlink(p)
        g = File(2, FileKind.FIFO, os.O_RDWR, RW)
        assert not KIND.checkpoint(col, g, LocalRef(fd))  # type: ignore[arg-type]
        assert col.problems == [
            (
                f"task {os.getpid()} (test) fd {fd}: pipe: {p} (deleted): the file "
                "was deleted"
            )
        ]
    finally:
        os.close(fd)


def _collect(col: Collector, files: list[File], refs: dict[int, LocalRef]) -> None:
    col.image = Image(head=Head(1.0, "a", "b", "c", "d"))
    col.files = files
    col.first = dict(refs)
    try:
        KIND.collect(col)  # type: ignore[arg-type]
    finally:
        col.close()


def test_collect_copies_anonymous_pipes_without_consuming() -> None:
    r1, w1 = os.pipe2(os.O_CLOEXEC)
    r2, w2 = os.pipe2(os.O_CLOEXEC)
    r3, w3 = os.pipe2(os.O_CLOEXEC)
    try:
        os.write(w1, b"first pipe")
        big = os.urandom(60000)
        fcntl.fcntl(w2, fcntl.F_SETPIPE_SZ, 1 << 16)
        os.write(w2, big)
        files = [
            File(1, FileKind.PIPE, os.O_RDONLY, FMode.READ, pipe_objref=100),
            File(2, FileKind.PIPE, os.O_WRONLY, FMode.WRITE, pipe_objref=100),
            File(3, FileKind.PIPE, os.O_RDONLY, FMode.READ, pipe_objref=200),
            File(4, FileKind.PIPE, os.O_WRONLY, FMode.WRITE, pipe_objref=300),
        ]
        st1 = PipeState(10, 65536, False, False)
        st2 = PipeState(60000, 1 << 16, False, True)
        st3 = PipeState(0, 65536, True, False)
        col = Collector(
            info={
                1: _info(FMode.READ, 100),
                2: _info(FMode.WRITE, 100),
                3: _info(FMode.READ, 200),
                4: _info(FMode.WRITE, 300),
            }
        )
        refs = {
            1: LocalRef(r1, 1, pipe=st1),
            2: LocalRef(w1, 2, pipe=st1),
            3: LocalRef(r2, 3, pipe=st2),
            4: LocalRef(w3, 4, pipe=st3),
        }
        _collect(col, files, refs)
        got = pipes(col.image)
        assert got == {
            100: Pipe(100, 65536, b"first pipe"),
            200: Pipe(200, 1 << 16, big, no_writer=True),
            300: Pipe(300, 65536, b"", no_reader=True),
        }
        # nothing consumed, and the scratch pipe closed
        assert os.read(r1, 100) == b"first pipe"
        assert os.read(r2, 1 << 17) == big
        assert col.owned == []
    finally:
        for fd in (r1, w1, r2, w2, r3, w3):
            os.close(fd)


def test_collect_fills_the_scratch_more_than_once() -> None:
    """Pipes whose data add up past the scratch's size: read out, tee'd again."""
    ends = [os.pipe2(os.O_CLOEXEC) for _ in range(3)]
    size = 1 << 20
    try:
        files, refs, info, want = [], {}, {}, {}
        for i, (r, w) in enumerate(ends):
            try:
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
            except PermissionError:
                pytest.skip("a 1 MiB pipe needs a higher pipe-max-size")
            blob = bytes([i + 1]) * (size - 4096 * i)
            os.set_blocking(w, False)
            n = os.write(w, blob)
            want[10 + i] = blob[:n]
            objref = i + 1
            files.append(File(objref, FileKind.PIPE, 0, FMode.READ, pipe_objref=10 + i))
            info[objref] = _info(FMode.READ, 10 + i)
            refs[objref] = LocalRef(r, objref, pipe=PipeState(n, size, False, False))
        col = Collector(info=info)
        _collect(col, files, refs)
        assert {k: p.data for k, p in pipes(col.image).items()} == want
        assert sum(len(d) for d in want.values()) > pk.SCRATCH_SIZE
    finally:
        for r, w in ends:
            os.close(r)
            os.close(w)


def test_collect_a_fifo_through_its_ends(tmp_path: Path) -> None:
    p = tmp_path / "fifo"
    os.mkfifo(p)
    r = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    w = os.open(p, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(w, b"in the fifo")
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 8192)
        files = [
            File(1, FileKind.FIFO, os.O_RDONLY, FMode.READ, pipe_objref=50),
            File(2, FileKind.FIFO, os.O_WRONLY, FMode.WRITE, pipe_objref=50),
        ]
        col = Collector(info={1: _info(FMode.READ, 50), 2: _info(FMode.WRITE, 50)})
        _collect(col, files, {1: LocalRef(r, 1), 2: LocalRef(w, 2)})
        assert pipes(col.image) == {50: Pipe(50, 8192, b"in the fifo")}
        # its writer gone: the reader sees POLLHUP, the pipe says no writer
        os.close(w)
        w = -1
        col = Collector(info={1: _info(FMode.READ, 50)})
        _collect(col, files[:1], {1: LocalRef(r, 1)})
        assert pipes(col.image)[50].no_writer and not pipes(col.image)[50].no_reader
        assert os.read(r, 100) == b"in the fifo"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


# ---- restart -------------------------------------------------------------------


def test_check_refuses_what_cannot_be_made() -> None:
    img = rich_image()
    img.files[6].st_mode = stat.S_IFIFO | 0o600
    plan = Plan(img)
    ends = [img.files[2], img.files[4], img.files[6], img.files[10]]
    KIND.check(ends, plan)  # type: ignore[arg-type]
    cases = [
        (end(2, FMode.READ, 5), "objref 2: bad pipe objref 5"),  # a file's
        (end(2, FMode.READ, 0), "objref 2: bad pipe objref 0"),
        (end(2, FMode.READ, 40), "objref 2: no PIPE record 40"),
        (end(2, RW, 3), "objref 2: a pipe end is read or write only"),
        (end(2, FMode.READ, 3, kind=FileKind.FIFO, path="/run/fifo"), "mixes kinds"),
        (end(6, RW, 7, kind=FileKind.FIFO, path="run/fifo"), "no absolute path"),
    ]
    for f, why in cases:
        group = (
            [f] if f.kind == FileKind.FIFO and f.pipe_objref == 7 else [img.files[4], f]
        )
        with pytest.raises(RestartError, match=why):
            KIND.check(group, plan)  # type: ignore[arg-type]


def test_restore_an_anonymous_pipe() -> None:
    files = [
        end(1, FMode.READ, 3),
        end(2, FMode.WRITE, 3, os.O_NONBLOCK),
        end(4, FMode.READ, 3, os.O_NONBLOCK),  # a second description of the read end
        end(5, FMode.WRITE, 6),
    ]
    pl = [Pipe(3, 8192, b"buffered\0data"), Pipe(6, 4096, b"", no_reader=True)]
    objs = Objects()
    try:
        KIND.restore(objs, files, Plan(image_of(files, pl)))  # type: ignore[arg-type]
        got = objs.inserted
        # one object per pipe: its ends and the pipe itself (the opposite end
        # of its first FILE) go in together
        assert objs.objects == [[1, 2, 4, 3], [5, 6]]
        assert os.read(got[1], 100) == b"buffered\0data"
        assert fcntl.fcntl(got[2], fcntl.F_GETPIPE_SZ) == 8192
        assert fd_flags(got[2]) & os.O_NONBLOCK and not fd_flags(got[1]) & os.O_NONBLOCK
        assert fd_flags(got[4]) & os.O_NONBLOCK and got[4] != got[1]
        assert os.fstat(got[4]).st_ino == os.fstat(got[1]).st_ino
        assert got[3] == got[2]  # the write end, under the pipe's objref
        assert got[6] != got[5] and fd_flags(got[6]) & os.O_ACCMODE == os.O_RDONLY
        os.write(got[2], b"x")
        assert os.read(got[4], 1) == b"x"  # one pipe
        for fd in got.values():
            assert not os.get_inheritable(fd)
    finally:
        objs.close()


def test_restore_packet_mode() -> None:
    files = [end(1, FMode.READ, 3), end(2, FMode.WRITE, 3, os.O_DIRECT)]
    objs = Objects()
    try:
        # a packet a slot: 16 of them
        KIND.restore(objs, files, Plan(image_of(files, [Pipe(3, 65536)])))  # type: ignore[arg-type]
        got = objs.inserted
        os.set_blocking(got[2], False)
        os.write(got[2], b"one")
        os.write(got[2], b"two")
        assert os.read(got[1], 100) == b"one"  # a packet per write
        # the kernel keeps O_DIRECT on the write end only, as it made it
        assert fd_flags(got[2]) & os.O_DIRECT
    finally:
        objs.close()


def test_restore_data_larger_than_the_recorded_size() -> None:
    files = [end(1, FMode.READ, 3)]
    data = os.urandom(100_000)
    objs = Objects()
    try:
        KIND.restore(objs, files, Plan(image_of(files, [Pipe(3, 4096, data)])))  # type: ignore[arg-type]
        got = objs.inserted
        assert fcntl.fcntl(got[1], fcntl.F_GETPIPE_SZ) >= len(data)
        out = b""
        while len(out) < len(data):
            out += os.read(got[1], len(data))
        assert out == data
    finally:
        objs.close()


def test_restore_a_fifo(tmp_path: Path) -> None:
    p = tmp_path / "fifo"
    os.mkfifo(p)
    st = os.stat(p)
    ident = {
        "path": str(p),
        "st_dev": st.st_dev,
        "st_ino": st.st_ino,
        "st_mode": st.st_mode,
        "st_uid": st.st_uid,
        "st_gid": st.st_gid,
        "kind": FileKind.FIFO,
    }
    files = [
        end(1, FMode.READ, 3, **ident),
        end(2, FMode.WRITE, 3, os.O_NONBLOCK, **ident),
    ]
    objs = Objects()
    try:
        KIND.restore(objs, files, Plan(image_of(files, [Pipe(3, 8192, b"fifo data")])))  # type: ignore[arg-type]
        got = objs.inserted
        assert objs.objects == [[1, 2, 3]]
        # no open blocked: the holder (O_RDWR) is a reader and a writer
        assert fd_flags(got[3]) & os.O_ACCMODE == os.O_RDWR
        assert os.read(got[1], 100) == b"fifo data"
        assert fd_flags(got[2]) & os.O_NONBLOCK
        assert fcntl.fcntl(got[3], fcntl.F_GETPIPE_SZ) == 8192
        assert all(os.fstat(fd).st_ino == st.st_ino for fd in got.values())
    finally:
        objs.close()
    # a FIFO replaced by another one: refused, by identity
    os.rename(p, tmp_path / "old")
    os.mkfifo(p)
    objs = Objects()
    try:
        with pytest.raises(RestartError, match="not the file that was checkpointed"):
            KIND.restore(objs, files, Plan(image_of(files, [Pipe(3, 8192)])))  # type: ignore[arg-type]
    finally:
        objs.close()


def test_restore_a_full_fifo(tmp_path: Path) -> None:
    p = tmp_path / "fifo"
    os.mkfifo(p)
    st = os.stat(p)
    f = end(
        1,
        FMode.READ,
        3,
        kind=FileKind.FIFO,
        path=str(p),
        st_dev=st.st_dev,
        st_ino=st.st_ino,
        st_mode=st.st_mode,
        st_uid=st.st_uid,
        st_gid=st.st_gid,
    )
    # someone outside keeps it open with its buffer full
    keep = os.open(p, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    objs = Objects()
    try:
        fcntl.fcntl(keep, fcntl.F_SETPIPE_SZ, 4096)
        with pytest.raises(BlockingIOError):
            while True:
                os.write(keep, b"x" * 4096)
        with pytest.raises(RestartError, match=f"pipe 3: FIFO {p} is full"):
            KIND.restore(objs, [f], Plan(image_of([f], [Pipe(3, 4096, b"more")])))  # type: ignore[arg-type]
    finally:
        objs.close()
        os.close(keep)


def test_restart_limit_on_pipe_data() -> None:
    from pyckpt.restarter import _check_limits

    img = rich_image()  # 12 + 8 bytes buffered
    assert KIND.data_bytes(img) == 20
    assert KIND.limit == ("pipe_bytes", "bytes of pipe data")
    _check_limits(img, Limits(pipe_bytes=20))
    with pytest.raises(RestartError, match="20 bytes of pipe data.*--max-pipe-bytes"):
        _check_limits(img, Limits(pipe_bytes=19))


def test_half_closed_ends_are_seen_by_poll() -> None:
    # a FIFO's closed ends, as collect() asks its copies of the open ones:
    # a reader without writers hangs up, a writer without readers errs
    r, w = os.pipe2(os.O_CLOEXEC)
    os.close(w)
    try:
        assert pk._poll(r) & select.POLLHUP
    finally:
        os.close(r)
    r, w = os.pipe2(os.O_CLOEXEC)
    os.close(r)
    try:
        assert pk._poll(w) & select.POLLERR
    finally:
        os.close(w)
