"""Issue 19, "fill root's memory and disk": checkpoint's total bound on what
it reads from the tree (Options.max_image_bytes, --max-image-bytes), counted
as data is read (the VM test, tests/vm/test_bounds.py, runs it on a tree)."""

from __future__ import annotations

import os

import pytest

from pyckpt.checkpointer import Options, _Collector
from pyckpt.errors import CheckpointError
from pyckpt.image import Head, Image
from pyckpt.kinds import memfd as mf


class _Ref:
    def where(self) -> str:
        return "task 7 (t) fd 3"

    link = "pipe:[99]"


def _col(limit: int) -> _Collector:
    img = Image(head=Head(1.0, "Linux", "6.1", "#1", "x86_64"))
    return _Collector(None, img, Options(max_image_bytes=limit))  # type: ignore[arg-type]


def test_default_is_one_gib() -> None:
    assert Options().max_image_bytes == 1 << 30


def test_take_refuses_past_the_budget() -> None:
    col = _col(1000)
    col.take(_Ref(), 600, "pipe data")
    col.take(_Ref(), 400, "pipe data")
    with pytest.raises(CheckpointError) as ei:
        col.take(_Ref(), 1, "pipe data")
    msg = str(ei.value)
    assert "task 7 (t) fd 3" in msg and "pipe:[99]" in msg and "pipe data" in msg
    assert "1001 bytes" in msg and "--max-image-bytes" in msg


def test_memfd_read_stops_at_the_budget() -> None:
    fd = os.memfd_create("budget", 0)
    try:
        os.write(fd, os.urandom(3 << 20))
        col = _col(2 << 20)
        with pytest.raises(CheckpointError, match="--max-image-bytes"):
            mf.save(
                fd, os.fstat(fd), 4 << 20, True, take=lambda n: col.take(_Ref(), n, "x")
            )
        # it stopped at the chunk that crossed: not all 3 MiB were read
        assert col.read_bytes <= (2 << 20) + mf._CHUNK
    finally:
        os.close(fd)


@pytest.mark.parametrize(("text", "value"), [("4096", 4096), ("2G", 2 << 30)])
def test_cli_max_image_bytes(text: str, value: int) -> None:
    from pyckpt import cli

    args = cli.parse(["checkpoint", "1", "-o", "x.img", "--max-image-bytes", text])
    assert cli._options(args).max_image_bytes == value
    default = cli.parse(["checkpoint", "1", "-o", "x.img"])
    assert cli._options(default).max_image_bytes == 1 << 30
