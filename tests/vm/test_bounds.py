"""Issue 19, "fill root's memory and disk", on a live tree: sparse memfds
are stored as their extents and come back with their holes; checkpoint's
byte budget (--max-image-bytes) refuses a tree with more to read, naming
the object, and leaves it running as it was."""

from __future__ import annotations

import os

import pytest
from oracle import facts
from trees import Member, tree_of

import pyckpt
from pyckpt.checkpointer import Options
from pyckpt.checkpointer import checkpoint as _checkpoint
from pyckpt.errors import CheckpointError

SLEEP = ["sleep", "1000"]


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_sparse_memfds_small_image_and_holes_kept(tmp_path) -> None:
    """64 memfds, 1 MiB long, 64 bytes of data each at their end: the image
    holds a page or so each, not 64 MiB, and restart makes the holes again."""

    def root(t: Member) -> None:
        for i in range(64):
            fd = os.memfd_create(f"sparse{i}", 0)
            os.ftruncate(fd, 1 << 20)
            os.pwrite(fd, b"E" * 64, (1 << 20) - 64)

    with tree_of(root) as pids:
        before = facts(pids)
        out = tmp_path / "t.img"
        pyckpt.checkpoint(pids[0], output=out, kill=True)
        assert os.path.getsize(out) < 2 << 20, os.path.getsize(out)
        with pyckpt.restart(out, argv=SLEEP, release=False) as r:
            new = r.pids[pids[0]]
            assert facts([r.pids[p] for p in pids]) == before
            fds = [
                n
                for n in os.listdir(f"/proc/{new}/fd")
                if os.readlink(f"/proc/{new}/fd/{n}").startswith("/memfd:sparse")
            ]
            assert len(fds) == 64
            st = os.stat(f"/proc/{new}/fd/{fds[0]}")
            assert st.st_size == 1 << 20 and st.st_blocks * 512 <= 64 << 10


def test_max_image_bytes_refuses_and_leaves_the_tree_running() -> None:
    def root(t: Member) -> None:
        _r, w = os.pipe()
        os.write(w, b"p" * 60000)
        m = os.memfd_create("data", 0)
        os.write(m, b"m" * 60000)

    with tree_of(root) as pids:
        before = facts(pids)
        with pytest.raises(CheckpointError) as ei:
            _checkpoint(pids[0], options=Options(max_image_bytes=100_000))
        msg = str(ei.value)
        assert "--max-image-bytes" in msg and f"task {pids[0]}" in msg
        assert "100000" in msg
        assert all(_state(p) != "T" for p in pids)  # thawed
        assert facts(pids) == before  # nothing consumed or changed
        res = _checkpoint(pids[0], options=Options(max_image_bytes=200_000), kill=True)
        with pyckpt.restart(res.image, argv=SLEEP, release=False) as r:
            assert facts([r.pids[p] for p in pids]) == before
