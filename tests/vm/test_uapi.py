"""Issue 18, section 3: the ABI as a maintainer asks for it (docs/uapi.md).

A version and feature query; every array the module writes carries its
element size; the TEST_* ioctls and fail_nth only with the debug parameter.
(Standard errnos: test_badinput; INSERT and FETCH _IOW: tests/host/test_abi.)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest
import trees
from vmhelpers import Fds, fail_fired, raises_errno, write_param

from pyckpt import Context, ObjType
from pyckpt.abi import ffi, lib
from pyckpt.proc import starttime

E = errno
PAD = 24  # bytes a future element might grow by


def test_version_and_features(ctx: Context) -> None:
    abi, features = ctx.version()
    assert abi == lib.CKPT_ABI_VERSION == 5
    want = (
        lib.CKPT_FEATURE_TASK_FDS
        | lib.CKPT_FEATURE_FDS_DETAIL
        | lib.CKPT_FEATURE_PTRACE_ACCESS
        | lib.CKPT_FEATURE_TASK_CREDS
        | lib.CKPT_FEATURE_DEBUG  # vm/guest.sh loads it with debug=1
    )
    assert features == want


@pytest.fixture
def no_debug() -> Iterator[None]:
    write_param("debug", 0)
    try:
        yield
    finally:
        write_param("debug", 1)


def test_test_ioctls_need_the_debug_parameter(ctx: Context, no_debug: None) -> None:
    assert not ctx.version()[1] & lib.CKPT_FEATURE_DEBUG
    for call in (ctx.test_new, lambda: ctx.test_put(1), lambda: ctx.test_stat(1)):
        with raises_errno(E.ENOTTY):
            call()


def test_fail_nth_needs_the_debug_parameter(ctx: Context, pipe, no_debug: None) -> None:
    r, _ = pipe()
    fired = fail_fired()
    write_param("fail_nth", 1)
    try:
        assert ctx.lookup_add(r).first  # no failure forced
    finally:
        write_param("fail_nth", 0)
    assert fail_fired() == fired


def _grown(ctype: str, n: int) -> tuple[object, int]:
    """n elements of ctype, each PAD bytes longer, the padding 0xff."""
    size = ffi.sizeof(ctype) + PAD
    return ffi.new("unsigned char[]", b"\xff" * (size * n)), size


def _element(buf: object, size: int, i: int, ctype: str) -> tuple[object, bytes]:
    base = ffi.cast("unsigned char *", buf) + i * size
    tail = bytes(ffi.buffer(base + ffi.sizeof(ctype), PAD))
    return ffi.cast(f"{ctype} *", base), tail


def test_errors_with_grown_entries(ctx: Context, pipe) -> None:
    r, _ = pipe()
    for objref in (-1, -2):
        with raises_errno(E.EINVAL):
            ctx.insert(objref, r)
    buf, size = _grown("struct ckpt_err_entry", 2)
    arg = ffi.new("struct ckpt_errors *")
    arg.buf = int(ffi.cast("uintptr_t", buf))
    arg.count = 2
    arg.entry_size = size
    ctx.ioctl(lib.CKPT_IOC_ERRORS, arg)
    assert arg.count == 2
    for i in range(2):
        e, tail = _element(buf, size, i, "struct ckpt_err_entry")
        assert (e.seq, e.err) == (i + 1, -E.EINVAL)
        assert tail == bytes(PAD)  # the module zeroes what it does not know


@pytest.mark.parametrize(
    "size", [lib.CKPT_ERR_ENTRY_SIZE_VER0 - 8, lib.CKPT_ITEM_SIZE_MAX + 8]
)
def test_errors_entry_size_out_of_range(ctx: Context, size: int) -> None:
    buf = ffi.new("unsigned char[]", max(size, 8))
    arg = ffi.new("struct ckpt_errors *")
    arg.buf = int(ffi.cast("uintptr_t", buf))
    arg.count = 1
    arg.entry_size = size
    with raises_errno(E.EINVAL):
        ctx.ioctl(lib.CKPT_IOC_ERRORS, arg)


def test_contained_with_grown_leaks(ctx: Context, fds: Fds) -> None:
    want = []
    for _ in range(2):
        r, w = os.pipe()
        fds.add(r, w, os.dup(r))  # the dup: a holder lookup_add never met
        res = ctx.lookup_add(r)
        # the file, and the pipe's inode (its write end was never met)
        want += [(res.objref, ObjType.FILE), (res.file.inode_objref, ObjType.INODE)]
    buf, size = _grown("struct ckpt_leak", 4)
    arg = ffi.new("struct ckpt_contained *")
    arg.buf = int(ffi.cast("uintptr_t", buf))
    arg.count = 4
    arg.leak_size = size
    with raises_errno(E.EBUSY):
        ctx.ioctl(lib.CKPT_IOC_CONTAINED, arg)
    assert (arg.count, arg.total) == (4, 4)
    got = []
    for i in range(4):
        leak, tail = _element(buf, size, i, "struct ckpt_leak")
        got.append((leak.objref, leak.type))
        assert tail == bytes(PAD)
    assert sorted(got) == sorted(want)


@pytest.mark.parametrize("detail", [False, True])
def test_task_fds_with_grown_entries(
    ctx: Context, spawn, fds: Fds, detail: bool
) -> None:
    r, w = os.pipe()
    fds.add(r, w)
    root = spawn(lambda m: None, pass_fds=(r, w)).root
    with Context() as other:
        want = [e.fd for e in other.task_fds(root, starttime(root), detail=detail)]
    ctype = "struct ckpt_fd_detail" if detail else "struct ckpt_fd_entry"
    buf, size = _grown(ctype, 64)
    arg = ffi.new("struct ckpt_task_fds *")
    arg.pid = root
    arg.nr = 64
    arg.starttime = starttime(root)
    arg.flags = lib.CKPT_TASK_FDS_DETAIL if detail else 0
    arg.entries = int(ffi.cast("uintptr_t", buf))
    arg.entry_size = size
    ctx.ioctl(lib.CKPT_IOC_TASK_FDS, arg)
    assert arg.next_fd == -1
    got = []
    for i in range(arg.nr):
        e, tail = _element(buf, size, i, ctype)
        entry = e.entry if detail else e
        got.append(entry.fd)
        assert tail == bytes(PAD)
    assert got == want


def test_a_walked_context_refuses_an_unprivileged_holder_silently(
    spawn, fds: Fds
) -> None:
    # nothing logged for a refused caller (the rule of every EPERM)
    r, w = os.pipe()
    fds.add(r, w)
    root = spawn(lambda m: None, pass_fds=(r,)).root
    with Context() as ctx:
        ctx.task_fds(root, starttime(root))
        seq = ctx.errors()[-1].seq if ctx.errors() else 0

        def child() -> int:
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            try:
                ctx.stats()
            except OSError as e:
                return 0 if e.errno == E.EPERM else 2
            return 1

        assert trees.in_child(child) == 0
        assert [e for e in ctx.errors() if e.seq > seq] == []
