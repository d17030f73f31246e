"""Batch forms: the same results as one call per object, in one ioctl per
CKPT_BATCH_MAX items, and a failure that says how far it got."""

from __future__ import annotations

import errno
import os

import pytest
from vmhelpers import Fds, raises_errno

from pyckpt import CkptError, Context, FileKind, ObjType, device
from pyckpt.abi import lib


def test_lookup_add_many_matches_single_calls(make_ctx, pipe) -> None:
    ends = [e for _ in range(3) for e in pipe()]
    handles = [ends[0], ends[1], ends[0], *ends[2:], ends[5]]
    one, many = make_ctx(), make_ctx()
    singles = [one.lookup_add(h) for h in handles]
    assert many.lookup_add_many(handles) == singles
    assert [r.first for r in singles] == [
        True,
        True,
        False,
        True,
        True,
        True,
        True,
        False,
    ]
    assert all(r.file.kind == FileKind.PIPE for r in singles if r.first)


def test_lookup_add_many_mixed_types(ctx: Context, pipe) -> None:
    r, _ = pipe()
    t = ctx.test_new()
    res = ctx.lookup_add_many([(t, ObjType.TEST), (r, ObjType.FILE), (t, ObjType.TEST)])
    assert [x.objref for x in res] == [1, 2, 1]
    assert res[1].file.inode_objref == 3
    assert res[0].file is None


def test_insert_many_then_fetch_many(ctx: Context, pipe, fds: Fds) -> None:
    pairs = [pipe() for _ in range(4)]
    ctx.insert_many([(10 + n, w) for n, (_, w) in enumerate(pairs)])
    got = ctx.fetch_many([10 + n for n in range(len(pairs))])
    fds.add(*got)
    for (r, _), new in zip(pairs, got, strict=True):
        os.write(new, b"!")  # the fetched fd writes into its own pipe
        assert os.read(r, 1) == b"!"
    assert ctx.stats().nr_objs == 4


def test_empty_batches(ctx: Context) -> None:
    assert ctx.lookup_add_many([]) == []
    ctx.insert_many([])
    assert ctx.fetch_many([]) == []


def test_batch_stops_at_first_failure(ctx: Context) -> None:
    ids = [ctx.test_new() for _ in range(3)]
    items = [(1, ids[0]), (2, ids[1]), (2, ids[2]), (4, ids[2])]
    with raises_errno(errno.EEXIST, "CKPT_IOC_INSERT_BATCH") as info:
        ctx.insert_many(items, ObjType.TEST)
    assert info.value.done == 2
    assert "after 2 item(s)" in str(info.value)
    assert ctx.stats().nr_objs == 2  # items before stay done, after never ran
    assert ctx.test_stat(ids[2]).grabs == 0


def test_fetch_many_failure_returns_what_it_installed(
    ctx: Context, pipe, fds: Fds
) -> None:
    r, w = pipe()
    ctx.insert_many([(1, r), (2, w)])
    with raises_errno(errno.ENOENT, "CKPT_IOC_FETCH_BATCH") as info:
        ctx.fetch_many([1, 2, 3, 1])
    e: CkptError = info.value
    assert e.done == 2
    assert len(e.results) == 2
    fds.add(*e.results)
    assert all(os.fstat(fd) for fd in e.results)  # real fds the caller must close


def test_full_batch_in_one_ioctl(ctx: Context, pipe, monkeypatch) -> None:
    # exactly CKPT_BATCH_MAX items is allowed (one more is EMSGSIZE below)
    calls = count_ioctls(monkeypatch)
    r, _ = pipe()
    res = ctx.lookup_add_many([r] * lib.CKPT_BATCH_MAX)
    assert calls == [lib.CKPT_IOC_LOOKUP_ADD_BATCH]
    assert len(res) == lib.CKPT_BATCH_MAX
    assert res[0].first and not any(x.first for x in res[1:])
    assert {x.objref for x in res} == {1}


def count_ioctls(monkeypatch) -> list[int]:
    """Record the request of every ioctl pyckpt makes from now on."""
    calls: list[int] = []
    real = device._ioctl

    def spy(fd: int, req: int, arg: object) -> int:
        calls.append(req)
        return real(fd, req, arg)

    monkeypatch.setattr(device, "_ioctl", spy)
    return calls


def test_chunks_of_batch_max(ctx: Context, monkeypatch) -> None:
    # more items than fit in one ioctl: ceil(n / BATCH_MAX) ioctls, results
    # in order (a small BATCH_MAX keeps the test fast; the kernel's own limit
    # is exercised by test_full_batch_in_one_ioctl and test_oversized_count)
    monkeypatch.setattr(device, "BATCH_MAX", 3)
    ids = [ctx.test_new() for _ in range(10)]
    calls = count_ioctls(monkeypatch)
    res = ctx.lookup_add_many([(i, ObjType.TEST) for i in ids + ids[:2]])
    assert calls == [lib.CKPT_IOC_LOOKUP_ADD_BATCH] * 4
    assert [x.objref for x in res] == [*range(1, 11), 1, 2]
    assert [x.first for x in res] == [True] * 10 + [False] * 2
    calls.clear()
    assert ctx.fetch_many(list(range(1, 11)), ObjType.TEST) == ids
    assert len(calls) == 4


def test_failure_in_a_later_chunk_counts_all_done(ctx: Context, monkeypatch) -> None:
    monkeypatch.setattr(device, "BATCH_MAX", 4)
    ids = [ctx.test_new() for _ in range(10)]
    items = [(n + 1, i, ObjType.TEST) for n, i in enumerate(ids)]
    items[6] = (1, ids[6], ObjType.TEST)  # duplicate objref in the 2nd chunk
    with raises_errno(errno.EEXIST, "CKPT_IOC_INSERT_BATCH") as info:
        ctx.insert_many(items)
    assert info.value.done == 6
    assert ctx.stats().nr_objs == 6


@pytest.mark.parametrize("count", [lib.CKPT_BATCH_MAX + 1, 2**32 - 1])
def test_oversized_count(ctx: Context, count: int) -> None:
    from pyckpt.abi import ffi

    b = ffi.new("struct ckpt_batch *")
    b.count = count
    b.item_size = ffi.sizeof("struct ckpt_obj_arg")
    with raises_errno(errno.EMSGSIZE, "CKPT_IOC_INSERT_BATCH"):
        ctx.ioctl(lib.CKPT_IOC_INSERT_BATCH, b)
    assert b.done == 0


def test_bad_items_address(ctx: Context) -> None:
    from pyckpt.abi import ffi

    b = ffi.new("struct ckpt_batch *")
    b.items = 8  # unmapped
    b.count = 1
    b.item_size = ffi.sizeof("struct ckpt_obj_arg")
    with raises_errno(errno.EFAULT):
        ctx.ioctl(lib.CKPT_IOC_LOOKUP_ADD_BATCH, b)
