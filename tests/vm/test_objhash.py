"""The objhash: objrefs, deduplication, file records, insert/fetch."""

from __future__ import annotations

import errno
import os
import random
import tempfile

import pytest
from vmhelpers import Fds, raises_errno

from pyckpt import (
    Context,
    FileKind,
    FMode,
    ObjType,
    State,
    kcmp_file,
    pidfd_getfd,
)


def test_objrefs_start_at_1_and_grow_by_one(ctx: Context) -> None:
    ids = [ctx.test_new() for _ in range(5)]
    refs = [ctx.lookup_add(i, ObjType.TEST) for i in ids]
    assert [r.objref for r in refs] == [1, 2, 3, 4, 5]
    assert all(r.first for r in refs)
    assert ctx.stats().next_objref == 6


def test_file_objrefs_count_their_inodes(ctx: Context, pipe) -> None:
    # each new FILE takes the next objref, then its INODE takes one too
    r1, _ = pipe()
    r2, _ = pipe()
    a, b = ctx.lookup_add(r1), ctx.lookup_add(r2)
    assert (a.objref, a.file.inode_objref) == (1, 2)
    assert (b.objref, b.file.inode_objref) == (3, 4)


def test_dup_fd_maps_to_the_same_objref(ctx: Context, pipe, fds: Fds) -> None:
    r, _ = pipe()
    d = os.dup(r)
    fds.add(d)
    first = ctx.lookup_add(r)
    again = ctx.lookup_add(d)
    assert first.first and not again.first
    assert again.objref == first.objref
    assert again.file is None  # the record body is filled only the first time
    assert ctx.stats().nr_objs == 2  # the file and its inode, once each


def test_fd_shared_across_fork_maps_to_the_same_objref(
    ctx: Context, pipe, fds: Fds
) -> None:
    # the child's copy of the fd is the same struct file: pidfd_getfd brings
    # it back the way checkpoint collects a task's fds
    r, _w = pipe()
    parent = ctx.lookup_add(r)
    gate_r, gate_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: keep the fds until told to go
        os.close(gate_w)
        os.read(gate_r, 1)
        os._exit(0)
    os.close(gate_r)
    try:
        pidfd = os.pidfd_open(pid)
        fds.add(pidfd)
        theirs = pidfd_getfd(pidfd, r)
        fds.add(theirs)
        child = ctx.lookup_add(theirs)
    finally:
        os.close(gate_w)
        os.waitpid(pid, 0)
    assert parent.first and not child.first
    assert child.objref == parent.objref


def test_child_lookup_through_inherited_context(ctx: Context, pipe) -> None:
    # the context fd is inherited too: one kernel context, seen from the child
    r, _ = pipe()
    parent = ctx.lookup_add(r)
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(rd)
            res = ctx.lookup_add(r)
            os.write(wr, f"{res.objref} {int(res.first)}".encode())
            status = 0
        finally:
            os._exit(status)
    os.close(wr)
    out = os.read(rd, 100).decode()
    os.close(rd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out == f"{parent.objref} 0"


def test_two_pipe_ends_two_files_one_inode(ctx: Context, pipe) -> None:
    r, w = pipe()
    a = ctx.lookup_add(r)
    b = ctx.lookup_add(w)
    assert (a.objref, a.file.inode_objref) == (1, 2)
    assert (b.objref, b.file.inode_objref) == (3, 2)
    assert a.first and b.first
    assert a.file.kind == b.file.kind == FileKind.PIPE
    assert a.file.f_mode == FMode.READ
    assert b.file.f_mode == FMode.WRITE
    assert a.file.f_flags & os.O_NONBLOCK
    st = ctx.stats()
    assert st.nr_objs == 3
    assert st.state & State.CHECKPOINT


def test_inode_lookup_by_fd(ctx: Context, pipe) -> None:
    r, w = pipe()
    f = ctx.lookup_add(r)
    i = ctx.lookup_add(w, ObjType.INODE)
    assert not i.first
    assert i.objref == f.file.inode_objref
    assert i.file is None


def test_regular_file_record(ctx: Context, fds: Fds) -> None:
    with tempfile.TemporaryFile() as f:
        os.write(f.fileno(), b"hello world")
        os.lseek(f.fileno(), 6, os.SEEK_SET)
        res = ctx.lookup_add(f.fileno())
    assert res.file.kind == FileKind.REG
    assert res.file.pos == 6
    assert res.file.f_mode == FMode.READ | FMode.WRITE
    assert res.file.f_flags & os.O_ACCMODE == os.O_RDWR


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/", FileKind.DIR), ("/dev/null", FileKind.CHR)],
)
def test_file_kinds(ctx: Context, fds: Fds, path: str, kind: FileKind) -> None:
    fd = os.open(path, os.O_RDONLY)
    fds.add(fd)
    assert ctx.lookup_add(fd).file.kind == kind


def test_eventfd_is_anon(ctx: Context, fds: Fds) -> None:
    fd = os.eventfd(0)
    fds.add(fd)
    assert ctx.lookup_add(fd).file.kind == FileKind.ANON


def test_insert_then_fetch_gives_same_open_file(ctx: Context, fds: Fds) -> None:
    fd, path = tempfile.mkstemp()
    os.unlink(path)
    fds.add(fd)
    os.write(fd, b"0123456789")
    ctx.insert(7, fd)
    new = ctx.fetch(7)
    fds.add(new)
    assert new != fd
    me = os.getpid()
    assert kcmp_file(me, fd, me, new)
    # a shared open file description shares its offset
    os.lseek(fd, 3, os.SEEK_SET)
    assert os.lseek(new, 0, os.SEEK_CUR) == 3
    # and it is not merely the same file opened again
    other = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    fds.add(other)
    assert not kcmp_file(me, fd, me, other)
    assert ctx.stats().state & State.RESTART


def test_fetch_cloexec_flag(ctx: Context, pipe, fds: Fds) -> None:
    r, _ = pipe()
    ctx.insert(1, r)
    a = ctx.fetch(1, cloexec=True)
    b = ctx.fetch(1, cloexec=False)
    fds.add(a, b)
    assert not os.get_inheritable(a)
    assert os.get_inheritable(b)


def test_fetch_test_object_gives_its_id(ctx: Context) -> None:
    t = ctx.test_new()
    ctx.insert(42, t, ObjType.TEST)
    assert ctx.fetch(42, ObjType.TEST) == t


def test_test_object_refs(ctx: Context) -> None:
    # the creator's handle is one reference; the hash takes one, once
    t = ctx.test_new()
    assert ctx.test_stat(t).refs == 1
    ctx.lookup_add(t, ObjType.TEST)
    ctx.lookup_add(t, ObjType.TEST)
    s = ctx.test_stat(t)
    assert (s.refs, s.grabs, s.drops) == (2, 1, 0)


def test_insert_grabs_one_ref(ctx: Context) -> None:
    t = ctx.test_new()
    ctx.insert(3, t, ObjType.TEST)
    s = ctx.test_stat(t)
    assert (s.refs, s.grabs, s.drops) == (2, 1, 0)


def test_test_put_twice(ctx: Context) -> None:
    t = ctx.test_new()
    ctx.test_put(t)
    with raises_errno(errno.ENOENT, "CKPT_IOC_TEST_PUT"):
        ctx.test_put(t)


def test_default_setup(ctx: Context) -> None:
    st = ctx.stats()
    assert st.hash_bits == 10
    assert st.nr_buckets == 1 << 10
    assert st.nr_objs == st.nr_free == 0
    assert st.next_objref == 1


@pytest.mark.parametrize("bits", [1, 4, 20])
def test_setup_hash_bits(ctx: Context, bits: int) -> None:
    ctx.setup(hash_bits=bits)
    st = ctx.stats()
    assert (st.hash_bits, st.nr_buckets) == (bits, 1 << bits)


def test_autogrow_keeps_chains_short(ctx: Context) -> None:
    ctx.setup(hash_bits=2, autogrow=True)
    ids = [ctx.test_new() for _ in range(200)]
    ctx.lookup_add_many([(i, ObjType.TEST) for i in ids])
    st = ctx.stats()
    assert st.nr_objs == 200
    assert st.nr_grows >= 1
    assert st.nr_objs <= 2 * st.nr_buckets
    assert st.max_chain <= 16


def test_without_autogrow_buckets_stay(ctx: Context) -> None:
    ctx.setup(hash_bits=2)
    ids = [ctx.test_new() for _ in range(50)]
    ctx.lookup_add_many([(i, ObjType.TEST) for i in ids])
    st = ctx.stats()
    assert (st.nr_buckets, st.nr_grows) == (4, 0)
    assert st.max_chain >= 50 // 4


def test_lookup_counters_move(ctx: Context) -> None:
    t = ctx.test_new()
    before = ctx.stats().lookups
    ctx.lookup_add(t, ObjType.TEST)
    ctx.lookup_add(t, ObjType.TEST)
    assert ctx.stats().lookups > before


@pytest.mark.parametrize("seed", range(4))
def test_objrefs_follow_a_model(ctx: Context, fds: Fds, seed: int) -> None:
    # random lookups of pipe ends, their dups and test objects against a
    # model of the rules: a new file takes the next objref, then its inode
    # (if new) the one after; a known object keeps its objref and is not new
    rng = random.Random(seed)
    handles: list[tuple[int, ObjType, object, object]] = []  # fd/id, type, file, inode
    for p in range(4):
        r, w = os.pipe()
        d = os.dup(w)
        fds.add(r, w, d)
        handles += [
            (r, ObjType.FILE, (p, "r"), p),
            (w, ObjType.FILE, (p, "w"), p),
            (d, ObjType.FILE, (p, "w"), p),
        ]
    for _ in range(6):
        t = ctx.test_new()
        handles.append((t, ObjType.TEST, ("test", t), None))
    model: dict[object, int] = {}
    next_ref = 1
    for _ in range(150):
        handle, type_, key, inode = rng.choice(handles)
        res = ctx.lookup_add(handle, type_)
        if key in model:
            assert (res.objref, res.first) == (model[key], False), key
            continue
        model[key] = next_ref
        next_ref += 1
        assert (res.objref, res.first) == (model[key], True), key
        if inode is not None:
            if ("inode", inode) not in model:
                model["inode", inode] = next_ref
                next_ref += 1
            assert res.file.inode_objref == model["inode", inode]
    st = ctx.stats()
    assert st.nr_objs == len(model)
    assert st.next_objref == next_ref
