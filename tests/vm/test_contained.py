"""CKPT_IOC_CONTAINED: linux-cr's leak detection (ckpt_obj_contained).

After collecting, every object must be referenced exactly as often as
lookup_add met it; a surplus is a holder outside what was collected.  Here
the test process plays both the tree (the fds it passes) and the outside
world (the fds it keeps).
"""

from __future__ import annotations

import errno
import os
import tempfile

from vmhelpers import Fds, raises_errno

from pyckpt import Context, ObjType


def test_nothing_outside_means_no_leak(ctx: Context, pipe, fds: Fds) -> None:
    r, w = pipe()
    ctx.lookup_add_many([r, w])
    # both ends met, the test's own fds are the fds that were met
    assert ctx.contained() == []


def test_a_second_fd_on_the_file_is_a_leak(ctx: Context, pipe, fds: Fds) -> None:
    r, w = pipe()
    met_r, _ = ctx.lookup_add_many([r, w])
    extra = os.dup(r)  # a holder nobody told the module about
    fds.add(extra)
    leaks = ctx.contained()
    assert [(x.objref, x.type, x.users, x.refs) for x in leaks] == [
        (met_r.objref, ObjType.FILE, 1, 2)
    ]
    # meeting it again (the dup is part of the tree after all) settles it
    ctx.lookup_add(extra)
    assert ctx.contained() == []


def test_pipe_end_open_elsewhere_is_a_leak_of_the_pipe(
    ctx: Context, pipe, fds: Fds
) -> None:
    r, _w = pipe()  # the write end stays with the "outside"
    res = ctx.lookup_add(r)
    leaks = ctx.contained()
    assert [(x.objref, x.type, x.users, x.refs) for x in leaks] == [
        (res.file.inode_objref, ObjType.INODE, 1, 2)
    ]


def test_half_closed_pipe_is_not_a_leak(ctx: Context, pipe, fds: Fds) -> None:
    r, w = pipe()
    ctx.lookup_add(r)
    fds.close(w)  # the write end is gone everywhere
    assert ctx.contained() == []


def test_regular_file_inode_is_not_counted(ctx: Context, fds: Fds) -> None:
    with tempfile.TemporaryFile(dir="/tmp") as f:
        a = os.open(f"/proc/self/fd/{f.fileno()}", os.O_RDONLY)
        fds.add(a)
        ctx.lookup_add(a)
        # f itself is a second open of the same inode: inodes of regular
        # files are not checked, and a's file is held only by the test
        assert ctx.contained() == []


def test_contained_reports_every_leak_and_logs_them(
    ctx: Context, pipe, fds: Fds
) -> None:
    ends = [pipe() for _ in range(3)]
    met = ctx.lookup_add_many([r for r, _ in ends])
    leaks = ctx.contained()
    assert sorted(x.objref for x in leaks) == sorted(m.file.inode_objref for m in met)
    assert all(x.type == ObjType.INODE for x in leaks)
    assert [e.msg.startswith("usage leak") for e in ctx.errors()[-3:]] == [True] * 3


def test_contained_on_a_restart_context_is_ebadfd(ctx: Context, pipe) -> None:
    r, _ = pipe()
    ctx.insert(1, r)
    with raises_errno(errno.EINVAL, "CKPT_IOC_CONTAINED"):
        ctx.contained()


def test_contained_after_release_is_ebadfd(ctx: Context, pipe) -> None:
    r, _ = pipe()
    ctx.lookup_add(r)
    ctx.release()
    with raises_errno(errno.EINVAL, "CKPT_IOC_CONTAINED"):
        ctx.contained()


def test_contained_on_an_empty_context_finds_nothing(ctx: Context) -> None:
    # a tree without a single fd: nothing was met, nothing can leak
    assert ctx.contained() == []


def test_fewer_references_than_met_is_not_a_leak(ctx: Context, pipe) -> None:
    # tasks sharing one fd table (CLONE_FILES) meet each file once per task
    r, w = pipe()
    ctx.lookup_add_many([r, r, w])
    assert ctx.contained() == []
