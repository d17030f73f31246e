"""Contexts: isolated from each other, and closing one at any point frees all
it holds (the module-wide live counts return to where they were)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable

import pytest
from vmhelpers import Fds, delta, kmsg, mod_counts, raises_errno, reader_state

from pyckpt import Context, ObjType, Policy, State


def test_two_contexts_number_independently(make_ctx) -> None:
    a, b = make_ctx(), make_ctx()
    ta, tb = a.test_new(), b.test_new()
    assert a.lookup_add(ta, ObjType.TEST).objref == 1
    assert b.lookup_add(tb, ObjType.TEST).objref == 1
    assert a.lookup_add(a.test_new(), ObjType.TEST).objref == 2
    assert b.stats().nr_objs == 1


def test_contexts_never_see_each_others_objects(make_ctx, pipe, fds: Fds) -> None:
    a, b = make_ctx(), make_ctx()
    r, _ = pipe()
    a.insert(1, r)
    b.insert(2, b.test_new(), ObjType.TEST)
    with raises_errno(errno.ENOENT, "CKPT_IOC_FETCH"):
        b.fetch(1)
    with raises_errno(errno.ENOENT, "CKPT_IOC_FETCH"):
        a.fetch(2, ObjType.TEST)
    fd = a.fetch(1)
    fds.add(fd)


def test_test_ids_are_private(make_ctx) -> None:
    a, b = make_ctx(), make_ctx()
    t = a.test_new()
    with raises_errno(errno.ENOENT):
        b.lookup_add(t + 1000, ObjType.TEST)
    with raises_errno(errno.ENOENT):
        b.test_stat(t + 1000)
    # an id is a per-context number: b's first object is not a's
    u = b.test_new()
    b.lookup_add(u, ObjType.TEST)
    assert a.test_stat(t).grabs == 0


def test_release_of_one_context_leaves_the_other(make_ctx, pipe, fds: Fds) -> None:
    a, b = make_ctx(), make_ctx()
    r, w = pipe()
    a.insert(1, w)
    b.insert(1, w)
    fds.close(w)
    a.release()
    assert reader_state(r) == "empty"  # b still holds the write end
    b.release()
    assert reader_state(r) == "eof"


def test_error_logs_are_private(make_ctx) -> None:
    a, b = make_ctx(), make_ctx()
    with pytest.raises(OSError):
        a.lookup_add(-1)
    assert len(a.errors()) == 1
    assert b.errors() == []


def test_close_is_idempotent_and_final() -> None:
    c = Context()
    fd = c.fileno()
    c.close()
    c.close()
    assert c.closed
    with pytest.raises(ValueError, match="closed"):
        c.stats()
    with pytest.raises(OSError):
        os.fstat(fd)  # the fd number was really closed (not reused yet)


def test_context_manager_closes(observer: Context) -> None:
    before = mod_counts(observer)["mod_contexts"]
    with Context() as c:
        assert mod_counts(observer)["mod_contexts"] == before + 1
        c.test_new()
    assert c.closed
    assert mod_counts(observer)["mod_contexts"] == before


def test_dup_of_context_fd_keeps_it_alive(observer: Context) -> None:
    # the kernel context lives as long as any fd of that open file
    base = mod_counts(observer)
    c = Context()
    c.insert(1, c.test_new(), ObjType.TEST)
    extra = os.dup(c.fileno())
    c.close()
    assert delta(base, mod_counts(observer))["mod_contexts"] == 1
    assert delta(base, mod_counts(observer))["mod_objs"] == 1
    os.close(extra)
    d = delta(base, mod_counts(observer))
    assert d["mod_contexts"] == d["mod_objs"] == d["mod_test_live"] == 0


def _stage_empty(c: Context, fds: Fds) -> None:
    pass


def _stage_setup(c: Context, fds: Fds) -> None:
    c.setup(Policy.CLEAR_AT_END, hash_bits=3, autogrow=True)


def _stage_checkpoint(c: Context, fds: Fds) -> None:
    r, w = os.pipe()
    fds.add(r, w)
    c.lookup_add_many([r, w, r])
    t = c.test_new()
    c.lookup_add(t, ObjType.TEST)
    c.test_put(t)


def _stage_restart(c: Context, fds: Fds) -> None:
    r, w = os.pipe()
    fds.add(r, w)
    c.insert_many([(1, r), (2, w)])
    c.insert(3, c.test_new(), ObjType.TEST)
    fds.add(*c.fetch_many([1, 2]))


def _stage_many(c: Context, fds: Fds) -> None:
    c.setup(hash_bits=2, autogrow=True)
    ids = [c.test_new() for _ in range(300)]
    c.lookup_add_many([(i, ObjType.TEST) for i in ids])


def _stage_deferred(c: Context, fds: Fds) -> None:
    _stage_restart(c, fds)
    c.defer_drop(3)
    c.defer_log(1)
    c.defer_fail(errno.EIO)


def _stage_half_run(c: Context, fds: Fds) -> None:
    _stage_deferred(c, fds)
    c.defer_log(2)
    with pytest.raises(OSError):
        c.defer_run()


def _stage_errors(c: Context, fds: Fds) -> None:
    _stage_restart(c, fds)
    for _ in range(100):
        with pytest.raises(OSError):
            c.fetch(999)


def _released(policy: Policy) -> Callable[[Context, Fds], None]:
    def stage(c: Context, fds: Fds) -> None:
        c.setup(policy)
        _stage_deferred(c, fds)
        c.release()

    return stage


STAGES = {
    "empty": _stage_empty,
    "setup": _stage_setup,
    "checkpoint": _stage_checkpoint,
    "restart": _stage_restart,
    "many": _stage_many,
    "deferred": _stage_deferred,
    "half-run": _stage_half_run,
    "errors": _stage_errors,
    **{f"released-{p.name}": _released(p) for p in Policy},
}


@pytest.mark.parametrize("stage", STAGES.values(), ids=STAGES.keys())
def test_close_at_any_point_frees_everything(
    observer: Context, fds: Fds, stage: Callable[[Context, Fds], None]
) -> None:
    base = mod_counts(observer)
    c = Context()
    stage(c, fds)
    c.close()
    d = delta(base, mod_counts(observer))
    live = {
        k: d[k] for k in ("mod_contexts", "mod_objs", "mod_defers", "mod_test_live")
    }
    assert live == dict.fromkeys(live, 0)
    assert d["mod_test_grabs"] == d["mod_test_drops"]


def test_state_flags_follow_the_context(ctx: Context) -> None:
    assert ctx.stats().state == State(0)
    ctx.insert(1, ctx.test_new(), ObjType.TEST)
    assert ctx.stats().state == State.RESTART
    ctx.release()
    assert ctx.stats().state == State.RESTART | State.RELEASED | State.CLEARED


def test_forked_child_close_does_not_end_context(ctx: Context) -> None:
    ctx.insert(1, ctx.test_new(), ObjType.TEST)
    pid = os.fork()
    if pid == 0:
        try:
            ctx.close()  # the child's copy of the fd only
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert ctx.fetch(1, ObjType.TEST) == 1


@pytest.mark.parametrize("side", ["lookup_add", "insert"])
def test_inode_in_hash_outlives_umount(make_ctx, tmp_path, side: str) -> None:
    # The hash may be all that references an inode (INODE by fd, the fd then
    # closed); the filesystem can then be unmounted under it.  The hash must
    # keep the superblock alive, or teardown's iput() meets a dead one
    # ("VFS: Busy inodes after unmount", then a use-after-free).
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "ckpt-test", str(mnt)], check=True)
    start = kmsg()[-1][0] + 1
    ctx = make_ctx()
    fd = os.open(mnt / "f", os.O_CREAT | os.O_RDWR, 0o600)
    if side == "lookup_add":
        assert ctx.lookup_add(fd, ObjType.INODE).first
    else:
        ctx.insert(1, fd, ObjType.INODE)
    os.close(fd)
    umount = subprocess.run(
        ["umount", str(mnt)], check=False, capture_output=True, text=True
    )
    assert umount.returncode == 0, umount.stderr  # nothing pins the mount itself
    ctx.close()
    busy = [
        m for seq, m in kmsg() if seq >= start and ("Busy inodes" in m or "BUG" in m)
    ]
    assert not busy, busy


def test_file_in_hash_keeps_its_mount_busy(make_ctx, tmp_path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "ckpt-test", str(mnt)], check=True)
    ctx = make_ctx()
    fd = os.open(mnt / "f", os.O_CREAT | os.O_RDWR, 0o600)
    ctx.lookup_add(fd)
    os.close(fd)
    try:
        busy = subprocess.run(["umount", str(mnt)], check=False, capture_output=True)
        assert busy.returncode != 0  # the hash's file holds the mount
    finally:
        ctx.close()
        subprocess.run(["umount", str(mnt)], check=True)
