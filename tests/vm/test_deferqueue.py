"""The deferqueue (its RFC's two bugs fixed): FIFO, count, first error,
early drop of a hash reference, and teardown of a queue that never ran."""

from __future__ import annotations

import errno

import pytest
from vmhelpers import Fds, delta, mod_counts, raises_errno, reader_state

from pyckpt import Context, DeferAction, ObjType


def test_runs_in_fifo_order(ctx: Context) -> None:
    tags = [5, 1, 4, 2**64 - 1, 0, 3]
    for t in tags:
        ctx.defer_log(t)
    assert ctx.tags() == []  # nothing runs before run()
    assert ctx.defer_run() == len(tags)
    assert ctx.tags() == tags


def test_run_returns_count_and_empties(ctx: Context) -> None:
    for t in range(7):
        ctx.defer_log(t)
    assert ctx.stats().defer_pending == 7
    assert ctx.defer_run() == 7
    assert ctx.stats().defer_pending == 0
    assert ctx.defer_run() == 0
    ctx.defer_log(99)
    assert ctx.defer_run() == 1
    assert ctx.tags() == [*range(7), 99]


def test_empty_queue_runs_zero(ctx: Context) -> None:
    assert ctx.defer_run() == 0


def test_first_error_stops_the_run(ctx: Context) -> None:
    ctx.defer_log(1)
    ctx.defer_fail(errno.EIO)
    ctx.defer_log(2)
    ctx.defer_fail(errno.ENOSPC)
    ctx.defer_log(3)
    with raises_errno(errno.EIO, "CKPT_IOC_DEFER_RUN") as info:
        ctx.defer_run()
    assert any(e.func == "defer_fail" for e in info.value.entries), str(info.value)
    assert ctx.tags() == [1]
    assert ctx.stats().defer_pending == 3  # the entries after the failure
    with raises_errno(errno.ENOSPC):
        ctx.defer_run()
    assert ctx.tags() == [1, 2]
    assert ctx.defer_run() == 1
    assert ctx.tags() == [1, 2, 3]
    assert ctx.stats().defer_pending == 0


@pytest.mark.parametrize("err", [1, errno.ENOMEM, 133])  # 133: EHWPOISON, the last
def test_fail_returns_its_errno(ctx: Context, err: int) -> None:
    ctx.defer_fail(err)
    with pytest.raises(OSError) as info:
        ctx.defer_run()
    assert info.value.errno == err


@pytest.mark.parametrize("err", [0, -1, 134, 512, 4095, 4096, 2**31 - 1])
def test_fail_errno_out_of_range(ctx: Context, err: int) -> None:
    with raises_errno(errno.EINVAL, "CKPT_IOC_DEFER_ADD"):
        ctx.defer_fail(err)
    assert ctx.stats().defer_pending == 0


@pytest.mark.parametrize(
    "action", [DeferAction.NONE, DeferAction.EPOLL, len(DeferAction), 0xFFFFFFFF]
)
def test_unknown_or_reserved_action(ctx: Context, action: int) -> None:
    with raises_errno(errno.EINVAL, "CKPT_IOC_DEFER_ADD"):
        ctx.defer_add(action)
    assert ctx.stats().defer_pending == 0


def test_drop_unknown_objref(ctx: Context) -> None:
    ctx.insert(1, ctx.test_new(), ObjType.TEST)
    with raises_errno(errno.ENOENT, "CKPT_IOC_DEFER_ADD"):
        ctx.defer_drop(2)


def test_drop_holds_its_own_reference_until_run(ctx: Context) -> None:
    t = ctx.test_new()
    ctx.insert(5, t, ObjType.TEST)
    ctx.defer_drop(5)
    s = ctx.test_stat(t)
    assert (s.refs, s.grabs, s.drops) == (3, 2, 0)  # handle, hash, queue entry
    assert ctx.defer_run() == 1
    s = ctx.test_stat(t)
    assert (s.refs, s.grabs, s.drops) == (1, 2, 2)  # hash and entry dropped
    with raises_errno(errno.ENOENT, "CKPT_IOC_FETCH"):
        ctx.fetch(5, ObjType.TEST)
    ctx.release()
    assert ctx.test_stat(t).drops == 2  # clear does not drop it a second time


def test_drop_twice_second_is_enoent(ctx: Context) -> None:
    t = ctx.test_new()
    ctx.insert(1, t, ObjType.TEST)
    ctx.defer_drop(1)
    ctx.defer_drop(1)  # still held at add time
    with raises_errno(errno.ENOENT, "CKPT_IOC_DEFER_RUN"):
        ctx.defer_run()
    s = ctx.test_stat(t)
    assert s.grabs == s.drops == 3
    assert s.refs == 1
    # once dropped, a new DROP is refused when added
    with raises_errno(errno.ENOENT, "CKPT_IOC_DEFER_ADD"):
        ctx.defer_drop(1)


def test_drop_after_release_is_einval(ctx: Context) -> None:
    ctx.insert(1, ctx.test_new(), ObjType.TEST)
    ctx.release()
    with raises_errno(errno.EINVAL, "CKPT_IOC_DEFER_ADD"):
        ctx.defer_drop(1)


def test_deferred_drop_closes_half_closed_pipe(ctx: Context, pipe, fds: Fds) -> None:
    # "create, attach, then delete": the hash's reference goes when the queue
    # runs, before any release
    r, w = pipe()
    ctx.insert(1, w)
    fds.close(w)
    ctx.defer_drop(1)
    assert reader_state(r) == "empty"
    ctx.defer_run()
    assert reader_state(r) == "eof"
    assert ctx.stats().nr_objs == 1  # the entry stays: objrefs are never reused


def test_teardown_without_run(make_ctx, observer: Context) -> None:
    base = mod_counts(observer)
    ctx = make_ctx()
    t = ctx.test_new()
    ctx.insert(1, t, ObjType.TEST)
    ctx.defer_drop(1)
    ctx.defer_drop(1)
    for tag in range(5):
        ctx.defer_log(tag)
    ctx.defer_fail(errno.EIO)
    assert delta(base, mod_counts(observer))["mod_defers"] == 8
    ctx.close()
    d = delta(base, mod_counts(observer))
    assert d["mod_defers"] == 0
    assert d["mod_test_grabs"] == d["mod_test_drops"] == 3  # hash + 2 entries
    assert d["mod_test_live"] == 0
    assert d["mod_test_frees"] == 1
    assert d["mod_objs"] == d["mod_contexts"] == 0


def test_partial_run_then_teardown(make_ctx, observer: Context) -> None:
    base = mod_counts(observer)
    ctx = make_ctx()
    t = ctx.test_new()
    ctx.insert(1, t, ObjType.TEST)
    ctx.defer_fail(errno.EIO)
    ctx.defer_drop(1)
    with pytest.raises(OSError):
        ctx.defer_run()
    assert ctx.stats().defer_pending == 1
    ctx.close()
    d = delta(base, mod_counts(observer))
    assert d["mod_defers"] == d["mod_test_live"] == 0
    assert d["mod_test_grabs"] == d["mod_test_drops"] == 2


def test_tag_log_bounded(ctx: Context) -> None:
    # the log holds CKPT_TAGS_MAX tags; one more fails the run, not the module
    from pyckpt.abi import lib

    for t in range(lib.CKPT_TAGS_MAX + 1):
        ctx.defer_log(t)
    with pytest.raises(OSError) as info:
        ctx.defer_run()
    assert info.value.errno == errno.ENOSPC
    assert ctx.tags() == list(range(lib.CKPT_TAGS_MAX))
