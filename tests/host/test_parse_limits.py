"""Issue 19, "fill root's memory": restart's limits apply while the image
is parsed (refused at the first record that crosses one, before the rest
is read), and parsing memory stays within a small multiple of the image."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest
from test_image import build, find, specs
from test_kind_pipe import end, image_of

from pyckpt.abi import FileKind, FMode, HdrType
from pyckpt.errors import ImageError
from pyckpt.image import Fd, File, Head, Image, Task
from pyckpt.kinds.eventfd import Eventfd
from pyckpt.kinds.memfd import Contents
from pyckpt.kinds.pipe import Pipe
from pyckpt.limits import Limits

RW = FMode.READ | FMode.WRITE


def _task(
    pid: int, ppid: int, nfds: int = 3, argv: list[str] | None = None, **kw
) -> Task:
    fds = [Fd(i, 1) for i in range(nfds)]
    return Task(pid, ppid, 10, 10, "t", argv or ["t"], "/", fds, **kw)


def _image(tasks: list[Task], files: dict | None = None) -> Image:
    files = files or {1: File(1, FileKind.EVENTFD, os.O_RDWR, RW, extra=Eventfd())}
    return Image(
        head=Head(1.0, "Linux", "6.1", "#1", "x86_64"), tasks=tasks, files=files
    )


def three() -> Image:
    return _image([_task(10, 1), _task(11, 10), _task(12, 10)])


def _broken_after(data: bytes, rtype: HdrType, n: int) -> tuple[bytes, list[int]]:
    """data with the n-th record of rtype's fields intact and the last TASK's
    comm NUL-ridden: a limit refused before it is reached names its record,
    not the later malformation."""
    sp = specs(data)
    last = max(i for i, s in enumerate(sp) if s.type == HdrType.TASK)
    sp[last].var["comm"] = b"a\0b"
    return build(sp)


def test_tasks_refused_at_the_tree() -> None:
    data, offsets = _broken_after(three().to_bytes(), HdrType.TASK, 2)
    with pytest.raises(ImageError) as ei:
        Image.from_bytes(data, limits=Limits(tasks=2))
    assert "3 tasks" in ei.value.msg and "limit of 2" in ei.value.msg
    assert "--max-tasks" in ei.value.msg
    assert ei.value.offset == offsets[1]  # TREE
    Image.from_bytes(three().to_bytes(), limits=Limits(tasks=3))


def test_fds_refused_at_the_task_that_crosses() -> None:
    sp = specs(three().to_bytes())
    second = [i for i, s in enumerate(sp) if s.type == HdrType.TASK][1]
    data, offsets = _broken_after(three().to_bytes(), HdrType.TASK, 2)
    with pytest.raises(ImageError) as ei:
        Image.from_bytes(data, limits=Limits(fds=5))
    assert "6 fds" in ei.value.msg and "--max-fds" in ei.value.msg
    assert ei.value.offset == offsets[second]
    Image.from_bytes(three().to_bytes(), limits=Limits(fds=9))


def test_pipe_bytes_refused_at_the_pipe() -> None:
    files = [end(1, FMode.READ, 3), end(2, FMode.WRITE, 3), end(4, FMode.READ, 5)]
    pl = [Pipe(3, 65536, b"x" * 1000), Pipe(5, 4096, b"y" * 100)]
    data = image_of(files, pl).to_bytes()
    sp = specs(data)
    second = [i for i, s in enumerate(sp) if s.type == HdrType.PIPE][1]
    _, offsets = build(sp)
    with pytest.raises(ImageError) as ei:
        Image.from_bytes(data, limits=Limits(pipe_bytes=1050))
    assert "1100 bytes of pipe data" in ei.value.msg
    assert "--max-pipe-bytes" in ei.value.msg
    assert ei.value.offset == offsets[second]
    Image.from_bytes(data, limits=Limits(pipe_bytes=1100))


def test_contents_bytes_refused_at_the_contents() -> None:
    files = {
        i: File(
            i,
            FileKind.MEMFD,
            os.O_RDWR,
            RW,
            path=f"m{i}",
            st_mode=0o100600,
            st_size=100,
            extra=Contents(b"z" * 60),
        )
        for i in (1, 2)
    }
    img = _image([Task(10, 1, 10, 10, "t", ["t"], "/", [Fd(3, 1), Fd(4, 2)])], files)
    data = img.to_bytes()
    sp = specs(data)
    i = find(sp, HdrType.CONTENTS, objref=2)
    _, offsets = build(sp)
    with pytest.raises(ImageError) as ei:
        Image.from_bytes(data, limits=Limits(contents_bytes=100))
    assert "120 bytes of file contents" in ei.value.msg
    assert ei.value.offset == offsets[i]


def test_load_passes_limits(tmp_path: Path) -> None:
    p = tmp_path / "t.img"
    three().save(p)
    with pytest.raises(ImageError, match="--max-tasks"):
        Image.load(p, limits=Limits(tasks=1))
    assert len(Image.load(p).tasks) == 3


def test_cli_restart_applies_limits_while_reading(tmp_path: Path, capsys) -> None:
    from pyckpt import cli

    p = tmp_path / "t.img"
    three().save(p)
    assert cli.main(["restart", str(p), "--max-tasks", "2"]) == 1
    err = capsys.readouterr().err
    assert "3 tasks" in err and "--max-tasks" in err


# ---- memory -------------------------------------------------------------------


def _strings(n: int, total: int) -> list[str]:
    """Distinct strings of n bytes, as many as fit in total bytes."""
    return [
        format(i, "x").rjust(n, "0")[-n:] if n else ""
        for i in range(total // (n + 1) - 1)
    ]


def _peak(data: bytes, **kw) -> float:
    tracemalloc.start()
    try:
        Image.from_bytes(data, **kw)
        return tracemalloc.get_traced_memory()[1] / len(data)
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8])
def test_short_strings_parse_within_bound(n: int) -> None:
    """TASK records full of the shortest strings the reader takes (argv and
    env of 256 KiB each): parsing stays within 12x the image (a record of
    2-byte strings took 23x before the bound)."""
    per = max(n, 5)  # shorter ones than 5 bytes: only the first 64
    s = _strings(per, 256 << 10)
    if n < 5:
        s = _strings(n, 64 * (n + 1))[:32] + s[: len(s) - 64]
    tasks = [_task(10 + t, 10 if t else 1, argv=s, env=s) for t in range(4)]
    data = _image(tasks).to_bytes()
    ratio = _peak(data)
    assert ratio < 12, f"{n}-byte strings: {ratio:.1f}x"


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4])
def test_too_many_short_strings_refused(n: int) -> None:
    """A TASK record denser in strings than one per 6 bytes (beyond 64):
    refused by the reader before they are decoded, and by the writer."""
    s = _strings(n, 64 << 10)
    img = _image([_task(10, 1, argv=s)])
    with pytest.raises(ValueError, match="at most one string per 6 bytes"):
        img.to_bytes()
    ok = _image([_task(10, 1, argv=["x"])])
    sp = specs(ok.to_bytes())
    i = find(sp, HdrType.TASK)
    sp[i].var["argv"] = b"".join(a.encode() + b"\0" for a in s)
    sp[i].fields["argc"] = len(s)
    built, offsets = build(sp)
    with pytest.raises(ImageError) as ei:
        Image.from_bytes(built)
    assert ei.value.offset == offsets[i]
    assert f"{len(s)} argv and env strings" in ei.value.msg


def test_strings_limit() -> None:
    s = _strings(6, 64 << 10)
    tasks = [_task(10 + t, 10 if t else 1, argv=s) for t in range(3)]
    data = _image(tasks).to_bytes()
    with pytest.raises(ImageError, match="--max-strings"):
        Image.from_bytes(data, limits=Limits(strings=2 * len(s)))
    Image.from_bytes(data, limits=Limits(strings=3 * len(s)))


def test_groups_limit() -> None:
    tasks = [_task(10 + t, 10 if t else 1, groups=list(range(1000))) for t in range(3)]
    data = _image(tasks).to_bytes()
    with pytest.raises(ImageError, match="3000 supplementary groups.*--max-groups"):
        Image.from_bytes(data, limits=Limits(groups=2999))
    Image.from_bytes(data, limits=Limits(groups=3000))
