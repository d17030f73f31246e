"""Bad input: every kind gets its own errno (documented in ckpt.h), an entry in
the context's error log, and never a WARN or an oops."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from typing import Any

import pytest
from vmhelpers import Fds, kmsg, raises_errno

from pyckpt import CkptError, Context, ObjType, Policy
from pyckpt.abi import ffi, ioc, ioc_dir, lib, with_size

E = errno


def raw_struct(ctype: str, size: int | None = None, tail: bytes = b"", **fields: Any):
    """A buffer of `size` bytes holding struct `ctype` (cut short or extended)."""
    full = ffi.sizeof(ctype)
    size = full + len(tail) if size is None else size
    s = ffi.new(f"{ctype} *")
    for k, v in fields.items():
        setattr(s, k, v)
    buf = ffi.new("unsigned char[]", max(size, 1))
    ffi.memmove(buf, s, min(size, full))
    if tail:
        ffi.memmove(buf + full, tail, len(tail))
    return buf


def raw(
    ctx: Context,
    req: int,
    ctype: str,
    size: int | None = None,
    tail: bytes = b"",
    **fields: Any,
) -> int:
    """Send `req` with its size field set to the buffer's size."""
    buf = raw_struct(ctype, size, tail, **fields)
    full = ffi.sizeof(ctype)
    return ctx.ioctl(with_size(req, full + len(tail) if size is None else size), buf)


# ---- one table: the bad input, and the errno ckpt.h documents for it --------

Case = tuple[str, int, Callable[[Context, Fds], Any]]


def _restart(ctx: Context) -> int:
    """A restart context holding test object objref 1; returns its id."""
    t = ctx.test_new()
    ctx.insert(1, t, ObjType.TEST)
    return t


def _pipe(fds: Fds) -> tuple[int, int]:
    r, w = os.pipe()
    fds.add(r, w)
    return r, w


def _checkpoint_then_insert(c: Context, f: Fds) -> None:
    c.lookup_add(_pipe(f)[0])
    c.insert(10, _pipe(f)[0])


def _restart_then_lookup(c: Context, f: Fds) -> None:
    _restart(c)
    c.lookup_add(_pipe(f)[0])


def _insert_inode_then_fetch(c: Context, f: Fds) -> None:
    c.insert(1, _pipe(f)[0], ObjType.INODE)
    c.fetch(1, ObjType.INODE)


def _other_context_fd(c: Context, f: Fds) -> None:
    with Context() as other:
        c.lookup_add(other.fileno())


def _setup_after_add(c: Context, f: Fds) -> None:
    c.test_new()
    c.lookup_add(1, ObjType.TEST)
    c.setup(Policy.FREE_UPFRONT)


CASES: list[Case] = [
    # invalid objref / type / flags / arguments: EINVAL
    ("insert objref 0", E.EINVAL, lambda c, f: c.insert(0, _pipe(f)[0])),
    ("insert negative objref", E.EINVAL, lambda c, f: c.insert(-5, _pipe(f)[0])),
    ("fetch objref 0", E.EINVAL, lambda c, f: (_restart(c), c.fetch(0))),
    ("fetch negative objref", E.EINVAL, lambda c, f: (_restart(c), c.fetch(-1))),
    ("lookup_add type NONE", E.EINVAL, lambda c, f: c.lookup_add(_pipe(f)[0], 0)),
    ("lookup_add unknown type", E.EINVAL, lambda c, f: c.lookup_add(_pipe(f)[0], 99)),
    ("insert unknown type", E.EINVAL, lambda c, f: c.insert(1, _pipe(f)[0], 4)),
    ("fetch an inode", E.EINVAL, _insert_inode_then_fetch),
    ("setup policy out of range", E.EINVAL, lambda c, f: c.setup(len(Policy))),
    ("setup hash_bits 21", E.EINVAL, lambda c, f: c.setup(hash_bits=21)),
    ("setup hash_bits huge", E.EINVAL, lambda c, f: c.setup(hash_bits=2**32 - 1)),
    (
        "lookup_add with flags",
        E.EINVAL,
        lambda c, f: raw(
            c,
            lib.CKPT_IOC_LOOKUP_ADD,
            "struct ckpt_obj_arg",
            type=ObjType.FILE,
            handle=_pipe(f)[0],
            flags=0x80,
        ),
    ),
    (
        "setup non-zero padding",
        E.EINVAL,
        lambda c, f: raw(c, lib.CKPT_IOC_SETUP, "struct ckpt_setup", __pad=1),
    ),
    (
        "setup unknown flag",
        E.EINVAL,
        lambda c, f: raw(c, lib.CKPT_IOC_SETUP, "struct ckpt_setup", flags=0x100),
    ),
    # names no object: ENOENT
    ("fetch unknown objref", E.ENOENT, lambda c, f: (_restart(c), c.fetch(2))),
    ("lookup_add unknown test id", E.ENOENT, lambda c, f: c.lookup_add(12345, 3)),
    ("test_stat unknown id", E.ENOENT, lambda c, f: c.test_stat(7)),
    # duplicate: EEXIST
    (
        "insert duplicate objref",
        E.EEXIST,
        lambda c, f: (_restart(c), c.insert(1, c.test_new(), ObjType.TEST)),
    ),
    # wrong type: EINVAL (the log says which)
    (
        "fetch file as test",
        E.EINVAL,
        lambda c, f: (_restart(c), c.fetch(1, ObjType.FILE)),
    ),
    (
        "fetch test as inode",
        E.EINVAL,
        lambda c, f: (_restart(c), c.fetch(1, ObjType.INODE)),
    ),
    # bad fd: EBADF
    ("lookup_add fd -1", E.EBADF, lambda c, f: c.lookup_add(-1)),
    ("lookup_add closed fd", E.EBADF, lambda c, f: c.lookup_add(1_000_000)),
    ("insert closed fd", E.EBADF, lambda c, f: c.insert(1, 1_000_000)),
    ("lookup_add own context", E.EBADF, lambda c, f: c.lookup_add(c.fileno())),
    ("insert own context", E.EBADF, lambda c, f: c.insert(1, c.fileno())),
    ("lookup_add another context", E.EBADF, _other_context_fd),
    # wrong state: EINVAL (the log says which)
    ("insert in a checkpoint context", E.EINVAL, _checkpoint_then_insert),
    ("lookup_add in a restart context", E.EINVAL, _restart_then_lookup),
    (
        "lookup_add after release",
        E.EINVAL,
        lambda c, f: (c.release(), c.lookup_add(_pipe(f)[0])),
    ),
    (
        "fetch after release",
        E.EINVAL,
        lambda c, f: (_restart(c), c.release(), c.fetch(1, 3)),
    ),
    # busy: EBUSY
    ("setup after objects were added", E.EBUSY, _setup_after_add),
    # oversized batch: EMSGSIZE
    (
        "batch count above CKPT_BATCH_MAX",
        E.EMSGSIZE,
        lambda c, f: raw(
            c,
            lib.CKPT_IOC_LOOKUP_ADD_BATCH,
            "struct ckpt_batch",
            count=lib.CKPT_BATCH_MAX + 1,
            item_size=ffi.sizeof("struct ckpt_obj_arg"),
        ),
    ),
    (
        "errors capacity above the log",
        E.EMSGSIZE,
        lambda c, f: raw(
            c, lib.CKPT_IOC_ERRORS, "struct ckpt_errors", count=lib.CKPT_ERR_LOG_MAX + 1
        ),
    ),
    (
        "tags capacity above the log",
        E.EMSGSIZE,
        lambda c, f: raw(
            c, lib.CKPT_IOC_TAGS, "struct ckpt_tags", count=lib.CKPT_TAGS_MAX + 1
        ),
    ),
    # unknown ioctl: ENOTTY
    ("unknown nr", E.ENOTTY, lambda c, f: c.ioctl(ioc(0, lib.CKPT_IOC_MAGIC, 0x7F, 0))),
    (
        "other magic",
        E.ENOTTY,
        lambda c, f: c.ioctl(ioc(0, lib.CKPT_IOC_MAGIC + 1, 0x20, 0)),
    ),
    (
        "known nr, wrong direction",
        E.ENOTTY,
        lambda c, f: c.ioctl(
            ioc(lib._IOC_READ, lib.CKPT_IOC_MAGIC, 0x20, 8), ffi.new("char[8]")
        ),
    ),
    (
        "argumentless ioctl with a size",
        E.ENOTTY,
        lambda c, f: c.ioctl(with_size(lib.CKPT_IOC_RELEASE, 8), ffi.new("char[8]")),
    ),
    # argument struct shorter than its first version: EINVAL
    (
        "short setup",
        E.EINVAL,
        lambda c, f: raw(c, lib.CKPT_IOC_SETUP, "struct ckpt_setup", size=8),
    ),
    (
        "short obj arg",
        E.EINVAL,
        lambda c, f: raw(
            c,
            lib.CKPT_IOC_LOOKUP_ADD,
            "struct ckpt_obj_arg",
            size=lib.CKPT_OBJ_ARG_SIZE_VER0 - 8,
            type=1,
            handle=_pipe(f)[0],
        ),
    ),
    (
        "short stats",
        E.EINVAL,
        lambda c, f: raw(c, lib.CKPT_IOC_STATS, "struct ckpt_stats", size=8),
    ),
    (
        "zero-size obj arg",
        E.EINVAL,
        lambda c, f: raw(c, lib.CKPT_IOC_FETCH, "struct ckpt_obj_arg", size=0),
    ),
    (
        "batch item_size too small",
        E.EINVAL,
        lambda c, f: c_batch(c, f, item_size=lib.CKPT_OBJ_ARG_SIZE_VER0 - 4),
    ),
    # argument struct longer than known with a non-zero tail: E2BIG
    (
        "long setup, non-zero tail",
        E.E2BIG,
        lambda c, f: raw(
            c, lib.CKPT_IOC_SETUP, "struct ckpt_setup", tail=b"\0\0\0\1" * 2
        ),
    ),
    (
        "long obj arg, non-zero tail",
        E.E2BIG,
        lambda c, f: raw(
            c,
            lib.CKPT_IOC_LOOKUP_ADD,
            "struct ckpt_obj_arg",
            tail=b"\xff" + b"\0" * 7,
            type=1,
            handle=_pipe(f)[0],
        ),
    ),
    (
        "batch item_size above CKPT_ITEM_SIZE_MAX",
        E.EINVAL,
        lambda c, f: c_batch(c, f, item_size=lib.CKPT_ITEM_SIZE_MAX + 8),
    ),
    (
        "batch item with non-zero tail",
        E.E2BIG,
        lambda c, f: c_batch(
            c,
            f,
            item_size=ffi.sizeof("struct ckpt_obj_arg") + 8,
            tail=b"\0\0\0\0\0\0\0\1",
        ),
    ),
]


def c_batch(c: Context, f: Fds, item_size: int, tail: bytes = b"") -> None:
    """A one-item lookup_add batch whose items are item_size bytes apart."""
    item = raw_struct(
        "struct ckpt_obj_arg", size=item_size, type=ObjType.FILE, handle=_pipe(f)[0]
    )
    if tail:
        ffi.memmove(item + ffi.sizeof("struct ckpt_obj_arg"), tail, len(tail))
    b = ffi.new("struct ckpt_batch *")
    b.items = int(ffi.cast("uintptr_t", item))
    b.count = 1
    b.item_size = item_size
    c.ioctl(lib.CKPT_IOC_LOOKUP_ADD_BATCH, b)


@pytest.mark.parametrize(("what", "err", "do"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(
    ctx: Context, fds: Fds, what: str, err: int, do: Callable[[Context, Fds], Any]
) -> None:
    with raises_errno(err) as info:
        do(ctx, fds)
    assert str(info.value.entries[-1]) in str(info.value)


def test_only_standard_errnos() -> None:
    # ABI 5: every errno keeps its standard meaning; EBADFD, ESTALE, ENOMSG
    # and EPROTO meant something of the module's own before, E2BIG only
    # keeps copy_struct_from_user()'s (openat2(2)) non-zero tail
    used = {err for _, err, _ in CASES}
    assert not used & {E.EBADFD, E.ESTALE, E.ENOMSG, E.EPROTO}
    long_ = [what for what, err, _ in CASES if err == E.E2BIG]
    assert long_ and all("tail" in what for what in long_), long_


def test_every_errno_is_documented(header_text: str) -> None:
    doc = header_text[: header_text.index("#ifndef")]
    documented = set(re.findall(r"^ \*\s+(E[A-Z0-9]+)\s", doc, re.MULTILINE))
    for what, err, _ in CASES:
        assert errno.errorcode[err] in documented, f"{what}: {errno.errorcode[err]}"


def test_error_log_entry_fields(ctx: Context) -> None:
    _restart(ctx)
    with pytest.raises(CkptError) as info:
        ctx.insert(1, ctx.test_new(), ObjType.TEST)
    (entry,) = info.value.entries
    assert entry.err == -E.EEXIST
    assert entry.objref == 1
    assert entry.func and entry.msg
    assert "objref 1" in str(info.value)
    assert ctx.errors()[-1] == entry
    assert ctx.errors(since=entry.seq) == []


def test_error_log_seq_and_since(ctx: Context) -> None:
    for n in range(3):
        with pytest.raises(CkptError):
            ctx.lookup_add(-1 - n)
    log = ctx.errors()
    assert [e.seq for e in log] == [1, 2, 3]
    assert [e.seq for e in ctx.errors(since=1)] == [2, 3]


def test_error_log_keeps_the_newest(ctx: Context) -> None:
    n = lib.CKPT_ERR_LOG_MAX + 10
    for _ in range(n):
        with pytest.raises(CkptError):
            ctx.test_stat(99)
    log = ctx.errors()
    assert len(log) == lib.CKPT_ERR_LOG_MAX
    assert log[-1].seq == n
    assert log[0].seq == n - lib.CKPT_ERR_LOG_MAX + 1


def test_each_failure_reports_only_its_own_entries(ctx: Context) -> None:
    with pytest.raises(CkptError):
        ctx.fetch(0)
    with pytest.raises(CkptError) as info:
        ctx.lookup_add(-1)
    assert [e.err for e in info.value.entries] == [-E.EBADF]


def test_failed_call_changes_nothing(ctx: Context, fds: Fds) -> None:
    _restart(ctx)
    before = ctx.stats()
    with pytest.raises(CkptError):
        ctx.insert(1, ctx.test_new(), ObjType.TEST)
    with pytest.raises(CkptError):
        ctx.insert(2, 1_000_000)
    after = ctx.stats()
    assert (after.nr_objs, after.next_objref) == (before.nr_objs, before.next_objref)


@pytest.mark.parametrize(
    ("req", "ctype", "fields"),
    [
        (lib.CKPT_IOC_SETUP, "struct ckpt_setup", {"policy": Policy.FREE_UPFRONT}),
        (lib.CKPT_IOC_TEST_NEW, "struct ckpt_test_obj", {}),
        (lib.CKPT_IOC_STATS, "struct ckpt_stats", {}),
    ],
    ids=["setup", "test_new", "stats"],
)
def test_long_struct_with_zero_tail_is_accepted(
    ctx: Context, req: int, ctype: str, fields: dict[str, int]
) -> None:
    full = ffi.sizeof(ctype)
    buf = raw_struct(ctype, tail=b"\0" * 16, **fields)
    if not ioc_dir(req) & lib._IOC_WRITE:
        # an output-only struct is not read: its tail must come back zeroed
        ffi.memmove(buf + full, b"\xaa" * 16, 16)
    assert ctx.ioctl(with_size(req, full + 16), buf) == 0
    assert bytes(ffi.buffer(buf)[full:]) == b"\0" * 16
    if req == lib.CKPT_IOC_SETUP:
        assert ctx.stats().policy == Policy.FREE_UPFRONT


def test_long_lookup_add_with_zero_tail(ctx: Context, fds: Fds) -> None:
    r, _ = _pipe(fds)
    buf = raw_struct("struct ckpt_obj_arg", tail=b"\0" * 8, type=ObjType.FILE, handle=r)
    full = ffi.sizeof("struct ckpt_obj_arg")
    ctx.ioctl(with_size(lib.CKPT_IOC_LOOKUP_ADD, full + 8), buf)
    out = ffi.cast("struct ckpt_obj_arg *", buf)
    assert (out.objref, out.flags, out.file.inode_objref) == (1, lib.CKPT_OBJ_FIRST, 2)


def test_batch_item_with_zero_tail_is_accepted(ctx: Context, fds: Fds) -> None:
    c_batch(ctx, fds, item_size=ffi.sizeof("struct ckpt_obj_arg") + 8)
    assert ctx.stats().nr_objs == 2


def test_dmesg_clean_after_bad_input() -> None:
    # the bad input above must not have produced a WARN, BUG, oops or list
    # corruption report (vm/run-tests.sh checks the whole run the same way)
    bad = re.compile(r"WARNING:|BUG:|Oops|list_(add|del) corruption|general protection")
    hits = [msg for _, msg in kmsg() if bad.search(msg)]
    assert not hits, "\n".join(hits)
