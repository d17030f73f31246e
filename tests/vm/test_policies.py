"""Clear and free (the half-closed pipe race): what each policy drops and frees, and when.

The half-closed pipe is the race the v2 patch fixes: a pipe end that only the
objhash still holds must be gone when the restarted tasks are released, or
the other end sees a writer (or reader) that no task has.
"""

from __future__ import annotations

import errno
import os
import select

import pytest
from vmhelpers import Fds, delta, mod_counts, raises_errno, reader_state, writer_state

from pyckpt import Context, ObjType, Policy, State

ALL = list(Policy)


def test_clear_drops_exactly_one_ref_per_object(
    ctx: Context, observer: Context
) -> None:
    before = mod_counts(observer)
    ids = [ctx.test_new() for _ in range(10)]
    for i in ids:
        ctx.lookup_add(i, ObjType.TEST)
    for i in ids[:5]:  # repeated lookups must not add references
        ctx.lookup_add(i, ObjType.TEST)
    ctx.release()  # clear-early: the clear happens here
    for i in ids:
        s = ctx.test_stat(i)
        assert (s.grabs, s.drops, s.refs) == (1, 1, 1), f"test object {i}: {s}"
    d = delta(before, mod_counts(observer))
    assert d["mod_test_grabs"] == d["mod_test_drops"] == 10


def test_clear_restart_side_drops_one_ref_per_object(ctx: Context) -> None:
    ids = [ctx.test_new() for _ in range(10)]
    ctx.insert_many([(100 + n, i, ObjType.TEST) for n, i in enumerate(ids)])
    ctx.release()
    assert [ctx.test_stat(i).drops for i in ids] == [1] * 10


def test_free_list_holds_every_entry(ctx: Context, pipe) -> None:
    r, w = pipe()
    ctx.lookup_add(r)
    ctx.lookup_add(w)
    t = ctx.test_new()
    ctx.lookup_add(t, ObjType.TEST)
    assert (ctx.stats().nr_objs, ctx.stats().nr_free) == (4, 0)
    ctx.release()
    st = ctx.stats()
    assert (st.nr_objs, st.nr_free) == (0, 4)
    assert st.state & State.CLEARED and not st.state & State.FREED


@pytest.mark.parametrize("policy", ALL, ids=lambda p: p.name)
def test_policy_clears_and_frees_when_it_says(
    make_ctx, observer: Context, policy: Policy
) -> None:
    n = 8
    base = mod_counts(observer)
    ctx = make_ctx(policy)
    ids = [ctx.test_new() for _ in range(n)]
    for i in ids:
        ctx.lookup_add(i, ObjType.TEST)
        ctx.test_put(i)  # the hash now holds the last reference
    assert delta(base, mod_counts(observer))["mod_objs"] == n
    assert delta(base, mod_counts(observer))["mod_test_live"] == n

    ctx.release()
    st = ctx.stats()
    d = delta(base, mod_counts(observer))
    assert st.state & State.RELEASED
    if policy == Policy.CLEAR_AT_END:
        # before the patch: everything still held while the tasks run
        assert (st.nr_objs, st.nr_free) == (n, 0)
        assert not st.state & (State.CLEARED | State.FREED)
        assert (d["mod_objs"], d["mod_test_live"]) == (n, n)
    elif policy == Policy.CLEAR_EARLY:
        # v2 patch: references dropped now, entries kfree'd at teardown
        assert (st.nr_objs, st.nr_free) == (0, n)
        assert st.state & State.CLEARED and not st.state & State.FREED
        assert (d["mod_objs"], d["mod_test_live"]) == (n, 0)
    else:
        # free upfront: dropped and kfree'd before the tasks go
        assert (st.nr_objs, st.nr_free) == (0, 0)
        assert st.state & State.CLEARED and st.state & State.FREED
        assert (d["mod_objs"], d["mod_test_live"]) == (0, 0)
        assert st.nr_buckets == 0

    ctx.close()
    d = delta(base, mod_counts(observer))
    assert d["mod_objs"] == d["mod_test_live"] == d["mod_contexts"] == 0
    assert d["mod_test_frees"] == n
    assert d["mod_test_grabs"] == d["mod_test_drops"] == n


@pytest.mark.parametrize("policy", ALL, ids=lambda p: p.name)
def test_release_twice_is_ebadfd(make_ctx, policy: Policy) -> None:
    ctx = make_ctx(policy)
    ctx.release()
    with raises_errno(errno.EINVAL, "CKPT_IOC_RELEASE"):
        ctx.release()


def _half_closed_write_end(ctx: Context, pipe, fds: Fds) -> int:
    """Restart a pipe whose write end only the hash holds; return the reader."""
    r, w = pipe()
    ctx.insert(1, w)
    ctx.insert(2, r)
    fds.close(w)  # the restarted "writer" task closed its end long ago
    return r


@pytest.mark.parametrize("policy", ALL, ids=lambda p: p.name)
def test_half_closed_pipe_reader(make_ctx, pipe, fds: Fds, policy: Policy) -> None:
    ctx = make_ctx(policy)
    r = _half_closed_write_end(ctx, pipe, fds)
    # before release the hash's reference keeps a writer alive
    assert reader_state(r) == "empty"
    ctx.release()
    if policy == Policy.CLEAR_AT_END:
        assert reader_state(r) == "empty", "the race: pipe looks open after release"
        ctx.close()
    assert reader_state(r) == "eof"


@pytest.mark.parametrize("policy", ALL, ids=lambda p: p.name)
def test_half_closed_pipe_pollhup(make_ctx, pipe, fds: Fds, policy: Policy) -> None:
    ctx = make_ctx(policy)
    r = _half_closed_write_end(ctx, pipe, fds)
    p = select.poll()
    p.register(r, select.POLLIN)
    assert p.poll(0) == []
    ctx.release()
    if policy == Policy.CLEAR_AT_END:
        assert p.poll(0) == []
        ctx.close()
    assert p.poll(0) == [(r, select.POLLHUP)]


@pytest.mark.parametrize("policy", ALL, ids=lambda p: p.name)
def test_half_closed_pipe_writer(make_ctx, pipe, fds: Fds, policy: Policy) -> None:
    # symmetric: the hash holds the read end only, the writer must get EPIPE
    ctx = make_ctx(policy)
    r, w = pipe()
    ctx.insert(1, r)
    fds.close(r)
    assert writer_state(w) == "ok"
    ctx.release()
    if policy == Policy.CLEAR_AT_END:
        assert writer_state(w) == "ok", "the race: a reader no task has"
        ctx.close()
    assert writer_state(w) == "epipe"


def test_checkpoint_side_clear_closes_pipe(ctx: Context, pipe, fds: Fds) -> None:
    # the same holds for a checkpoint context: clear drops every reference
    r, w = pipe()
    ctx.lookup_add(w)
    fds.close(w)
    assert reader_state(r) == "empty"
    ctx.release()
    assert reader_state(r) == "eof"


def test_fetched_fd_survives_clear(ctx: Context, pipe, fds: Fds) -> None:
    # what a task fetched is its own reference: clear must not take it away
    r, w = pipe()
    ctx.insert(1, w)
    fds.close(w)
    w2 = ctx.fetch(1)
    fds.add(w2)
    ctx.release()
    assert reader_state(r) == "empty"
    os.write(w2, b"ok")
    assert os.read(r, 10) == b"ok"
    fds.close(w2)
    assert reader_state(r) == "eof"
