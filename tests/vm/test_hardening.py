"""Issue 8: what userspace could reach in ckpt.ko, one test per finding.

Each test here failed against the module before its fix (see the commit that
added it): a use after free through DEFER_DROP on a checkpoint context, a
context fd usable by another uid, kernel-internal errnos, unbounded
collections, a walk of the whole hash per FETCH, state left behind by failed
calls, references kept past RELEASE, mappings counted as leaks, and the small
ones (objref overflow, unchecked unused fields).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import stat
import tempfile
import time

import pytest
import trees
from vmhelpers import Fds, mod_counts, raises_errno, reader_state

from pyckpt import DEVICE, CkptError, Context, ObjType
from pyckpt.abi import ffi, lib
from pyckpt.syscalls import pidfd_getfd

E = errno
INT_MAX = 2**31 - 1
PARAMS = "/sys/module/ckpt/parameters"


def _param(name: str) -> int:
    with open(f"{PARAMS}/{name}") as f:
        return int(f.read())


def _nr_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---- 1. DEFER_DROP on a checkpoint context ----------------------------------


def test_defer_drop_is_refused_on_a_checkpoint_context(ctx: Context, pipe) -> None:
    r, _ = pipe()
    res = ctx.lookup_add(r)
    with raises_errno(E.EINVAL, "CKPT_IOC_DEFER_ADD"):
        ctx.defer_drop(res.objref)
    assert ctx.stats().defer_pending == 0


def test_a_new_pipe_after_a_drop_attempt_is_first(ctx: Context, fds: Fds) -> None:
    # The use after free: a dropped entry stayed findable by pointer, so a
    # new file the allocator placed at the freed address was "already seen".
    r, w = os.pipe()
    res = ctx.lookup_add(r)
    with contextlib.suppress(CkptError):
        ctx.defer_drop(res.objref)
        ctx.defer_drop(res.file.inode_objref)
        ctx.defer_run()
    os.close(r)
    os.close(w)
    time.sleep(0.5)  # files are freed after an RCU grace period
    for _ in range(64):
        r, w = os.pipe()
        fds.add(r, w)
        got = ctx.lookup_add(r)
        assert got.first, f"a new pipe reported as objref {got.objref}, already seen"


def test_defer_drop_still_works_on_a_restart_context(ctx: Context, pipe) -> None:
    _r, w = pipe()
    ctx.insert(1, w)
    ctx.defer_drop(1)
    assert ctx.defer_run() == 1
    with raises_errno(E.ENOENT):
        ctx.fetch(1)


# ---- 2. access control ------------------------------------------------------


def test_an_inherited_context_is_useless_to_another_uid(ctx: Context, fds: Fds) -> None:
    secret = tempfile.NamedTemporaryFile(dir="/tmp")  # noqa: SIM115
    os.chmod(secret.name, 0o600)
    secret.write(b"root only")
    secret.flush()
    fd = os.open(secret.name, os.O_RDONLY)
    fds.add(fd)
    ctx.insert(1, fd)

    def child() -> int:
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        refused = 0
        calls = (ctx.stats, lambda: ctx.fetch(1), ctx.errors, ctx.release)
        for call in calls:
            try:
                call()
            except CkptError as e:
                refused += e.errno == E.EPERM
        return 0 if refused == len(calls) else 1

    assert trees.in_child(child) == 0, "a uid-65534 child used root's context"
    # the owner's context is intact and still its own
    assert ctx.stats().nr_objs == 1
    assert ctx.errors() == []


def test_same_credentials_may_share_a_context(ctx: Context, pipe) -> None:
    r, _ = pipe()
    ctx.insert(1, r)
    assert trees.in_child(lambda: 0 if ctx.stats().nr_objs == 1 else 1) == 0


def _drop_all_capabilities() -> None:
    """capset(2) with empty sets: still uid 0, but no capability at all."""
    libc = ctypes.CDLL(None, use_errno=True)
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2
    if libc.syscall(126, hdr, data) != 0:  # SYS_capset on x86_64
        raise OSError(ctypes.get_errno(), "capset")


def test_root_without_capabilities_is_refused(ctx: Context, pipe) -> None:
    # Same ids as the opener but fewer capabilities: ptrace's rule refuses
    # it, and so must the context (root that dropped its capabilities is not
    # the root that opened it).
    r, _ = pipe()
    ctx.insert(1, r)

    def child() -> int:
        _drop_all_capabilities()
        try:
            ctx.stats()
        except CkptError as e:
            return 0 if e.errno == E.EPERM else 2
        return 1

    assert trees.in_child(child) == 0, "a capability-less uid 0 used the context"


def test_open_needs_the_capability(fds: Fds) -> None:
    # a node with mode 0666, so that only the module's own check refuses
    node = tempfile.mktemp(dir="/tmp", prefix="ckpt-node")
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.stat(DEVICE).st_rdev)
    except OSError as e:
        pytest.skip(f"cannot make a device node in /tmp: {e}")
    os.chmod(node, 0o666)

    def child() -> int:
        os.setresuid(65534, 65534, 65534)
        try:
            os.close(os.open(node, os.O_RDWR))
        except PermissionError:
            return 0
        return 1

    try:
        assert trees.in_child(child) == 0, "uid 65534 opened a context"
    finally:
        os.unlink(node)


# ---- 3. errnos userspace may see --------------------------------------------


@pytest.mark.parametrize("err", [0, 512, 4095, 134, -1])
def test_defer_fail_takes_only_userspace_errnos(ctx: Context, err: int) -> None:
    with raises_errno(E.EINVAL, "CKPT_IOC_DEFER_ADD"):
        ctx.defer_fail(err)
    assert ctx.stats().defer_pending == 0


def test_defer_fail_takes_the_last_userspace_errno(ctx: Context) -> None:
    ctx.defer_fail(133)  # EHWPOISON
    with raises_errno(133, "CKPT_IOC_DEFER_RUN"):
        ctx.defer_run()


# ---- 4. limits --------------------------------------------------------------


def test_deferqueue_limit(ctx: Context) -> None:
    ctx.setup(max_defers=4)
    for t in range(4):
        ctx.defer_log(t)
    with raises_errno(E.ENOSPC, "CKPT_IOC_DEFER_ADD"):
        ctx.defer_log(4)
    assert ctx.stats().defer_pending == 4


def test_repeated_drop_of_one_objref_is_bounded(ctx: Context) -> None:
    ctx.setup(max_defers=3)
    t = ctx.test_new()
    ctx.insert(1, t, ObjType.TEST)
    for _ in range(3):
        ctx.defer_drop(1)
    with raises_errno(E.ENOSPC):
        ctx.defer_drop(1)
    assert ctx.test_stat(t).refs == 1 + 1 + 3


def test_test_object_limit(ctx: Context) -> None:
    ctx.setup(max_tests=2)
    ctx.test_new()
    ctx.test_new()
    with raises_errno(E.ENOSPC, "CKPT_IOC_TEST_NEW"):
        ctx.test_new()


def test_hash_entry_limit(ctx: Context, pipe) -> None:
    ctx.setup(max_objs=3)
    t = ctx.test_new()
    for objref in (1, 2, 3):
        ctx.insert(objref, t, ObjType.TEST)
    with raises_errno(E.ENOSPC, "CKPT_IOC_INSERT"):
        ctx.insert(4, t, ObjType.TEST)
    assert ctx.stats().nr_objs == 3


def test_lookup_add_limit_counts_the_inode(ctx: Context, pipe) -> None:
    ctx.setup(max_objs=3)
    r, w = pipe()
    ctx.lookup_add(r)  # file and inode: 2 entries
    before = ctx.stats()
    with raises_errno(E.ENOSPC, "CKPT_IOC_LOOKUP_ADD"):
        ctx.lookup_add(pipe()[0])  # file fits, its new inode does not
    assert ctx.stats().nr_objs == before.nr_objs == 2
    assert ctx.lookup_add(w).first  # the same inode: one entry, fits


def test_limits_above_the_module_ceiling_are_refused(ctx: Context) -> None:
    ceiling = _param("max_objs")
    with raises_errno(E.EINVAL, "CKPT_IOC_SETUP"):
        ctx.setup(max_objs=ceiling + 1)
    ctx.setup(max_objs=ceiling)


# ---- 5. lookup by objref ----------------------------------------------------


def test_fetch_on_a_checkpoint_hash_is_one_probe(ctx: Context) -> None:
    ids = [ctx.test_new() for _ in range(3000)]
    ctx.lookup_add_many(ids, ObjType.TEST)
    for objref in (1, 1500, 3000):
        before = ctx.stats().probes
        assert ctx.fetch(objref, ObjType.TEST) == ids[objref - 1]
        assert ctx.stats().probes - before <= 2


# ---- 6. failure paths -------------------------------------------------------


def _readonly_arg(ctype: str, **fields: int):
    """struct ctype in a read-only page: the kernel can read but not write it."""
    s = ffi.new(f"{ctype} *")
    for k, v in fields.items():
        setattr(s, k, v)
    tmp = tempfile.TemporaryFile(dir="/tmp")  # noqa: SIM115
    tmp.write(bytes(ffi.buffer(s)))
    tmp.flush()
    m = mmap.mmap(tmp.fileno(), 0, prot=mmap.PROT_READ)
    buf = ffi.from_buffer(m, require_writable=False)
    return ffi.cast(f"{ctype} *", buf), (tmp, m, buf)


def test_fetch_batch_into_a_readonly_page_installs_no_fd(ctx: Context, pipe) -> None:
    # a single FETCH writes nothing (its fd is the ioctl's value); a batch
    # item's handle is probed (6.1) or written (6.8+) before the install
    r, _ = pipe()
    ctx.insert(1, r)
    item, keep = _readonly_arg("struct ckpt_obj_arg", type=ObjType.FILE, objref=1)
    b = ffi.new("struct ckpt_batch *")
    b.items = int(ffi.cast("uintptr_t", item))
    b.count = 1
    b.item_size = ffi.sizeof("struct ckpt_obj_arg")
    n = _nr_fds()
    with raises_errno(E.EFAULT, "CKPT_IOC_FETCH_BATCH"):
        ctx.ioctl(lib.CKPT_IOC_FETCH_BATCH, b)
    assert _nr_fds() == n
    assert b.done == 0
    del keep  # the mapping goes with its buffer


def test_fetch_from_a_readonly_page_works(ctx: Context, pipe, fds: Fds) -> None:
    r, _ = pipe()
    ctx.insert(1, r)
    arg, keep = _readonly_arg("struct ckpt_obj_arg", type=ObjType.FILE, objref=1)
    fd = ctx.ioctl(lib.CKPT_IOC_FETCH, arg)
    fds.add(fd)
    assert os.stat(fd) == os.stat(r)
    del keep


def test_lookup_add_into_a_readonly_page_keeps_first(ctx: Context, pipe) -> None:
    r, _ = pipe()
    arg, keep = _readonly_arg("struct ckpt_obj_arg", type=ObjType.FILE, handle=r)
    with raises_errno(E.EFAULT, "CKPT_IOC_LOOKUP_ADD"):
        ctx.ioctl(lib.CKPT_IOC_LOOKUP_ADD, arg)
    del keep
    got = ctx.lookup_add(r)
    assert (got.objref, got.first, got.file.inode_objref) == (1, True, 2)
    assert ctx.stats().nr_objs == 2


# ---- 7. release with queued work --------------------------------------------


def test_release_leaves_no_reference_of_a_queued_drop(
    ctx: Context, pipe, fds: Fds
) -> None:
    r, w = pipe()
    ctx.insert(1, w)
    ctx.defer_drop(1)  # queued, never run: it holds its own reference on w
    fds.close(w)
    ctx.release()  # clear-early
    assert reader_state(r) == "eof"
    assert ctx.stats().defer_pending == 0


# ---- 8. leak detection ------------------------------------------------------


def _map(fd: int, flags: int) -> int:
    """mmap(2) itself: Python's mmap keeps a dup of the fd, a holder."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    addr = libc.mmap(None, 4096, mmap.PROT_READ, flags, fd, 0)
    failed = (None, ctypes.c_void_p(-1).value)
    assert addr not in failed, os.strerror(ctypes.get_errno())
    return addr


def _unmap(addr: int) -> None:
    libc = ctypes.CDLL(None)
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.munmap(addr, 4096)


def test_a_mapping_of_a_collected_file_is_not_a_leak(ctx: Context, fds: Fds) -> None:
    # a memfd: on overlayfs (the guest's /tmp) a mapping holds the upper
    # file, not the one the fd names, and would prove nothing
    fd = os.memfd_create("ckpt-map")
    fds.add(fd)
    os.ftruncate(fd, 4096)
    maps = [_map(fd, mmap.MAP_SHARED), _map(fd, mmap.MAP_PRIVATE)]
    try:
        ctx.lookup_add(fd)
        assert ctx.contained() == []
        extra = os.dup(fd)  # an fd, unlike a mapping, is a holder
        fds.add(extra)
        (leak,) = ctx.contained()
        assert (leak.users, leak.refs) == (1, 2)
    finally:
        for addr in maps:
            _unmap(addr)


def test_a_pidfd_getfd_copy_counts_until_closed(ctx: Context, pipe, fds: Fds) -> None:
    # what checkpoint does: a copy of a task's fd, given to lookup_add; the
    # copy is a holder (ckpt.h) until the coordinator closes it
    r, w = pipe()
    pidfd = os.pidfd_open(os.getpid())
    copy = pidfd_getfd(pidfd, w)
    os.close(pidfd)
    fds.add(copy)
    ctx.lookup_add_many([r, copy])
    (leak,) = ctx.contained()
    assert (leak.type, leak.users, leak.refs) == (ObjType.FILE, 1, 2)
    fds.close(copy)
    assert ctx.contained() == []


# ---- 9. small ones ----------------------------------------------------------


def test_objref_int_max_does_not_overflow(ctx: Context) -> None:
    t = ctx.test_new()
    ctx.insert(INT_MAX, t, ObjType.TEST)
    assert ctx.fetch(INT_MAX, ObjType.TEST) == t
    assert ctx.stats().next_objref == INT_MAX  # saturated: no objref above


def _raw_obj(ctx: Context, req: int, **fields: int) -> None:
    a = ffi.new("struct ckpt_obj_arg *")
    for k, v in fields.items():
        if k.startswith("file_"):
            setattr(a.file, k[5:], v)
        else:
            setattr(a, k, v)
    ctx.ioctl(req, a)


@pytest.mark.parametrize(
    ("what", "req", "fields"),
    [
        ("lookup_add objref", "LOOKUP_ADD", {"objref": 5}),
        ("lookup_add file", "LOOKUP_ADD", {"file_pos": 1}),
        ("insert file", "INSERT", {"objref": 1, "file_kind": 1}),
        ("fetch handle", "FETCH", {"objref": 1, "handle": 7}),
        ("fetch file", "FETCH", {"objref": 1, "file_f_flags": 2}),
    ],
)
def test_unused_obj_fields_must_be_zero(
    ctx: Context, pipe, what: str, req: str, fields: dict[str, int]
) -> None:
    r, _ = pipe()
    if req == "FETCH":
        ctx.insert(1, r)
    fields = {"type": ObjType.FILE, **fields}
    if req != "FETCH":
        fields["handle"] = r
    with raises_errno(E.EINVAL):
        _raw_obj(ctx, getattr(lib, f"CKPT_IOC_{req}"), **fields)


@pytest.mark.parametrize(
    ("ctype", "req", "fields"),
    [
        ("struct ckpt_defer", "DEFER_ADD", {"action": 1, "objref": 3}),
        ("struct ckpt_defer", "DEFER_ADD", {"action": 1, "arg": 3}),
        ("struct ckpt_defer", "DEFER_ADD", {"action": 3, "arg": 5, "tag": 1}),
        ("struct ckpt_defer", "DEFER_ADD", {"action": 2, "objref": 1, "tag": 1}),
        ("struct ckpt_tags", "TAGS", {"total": 1}),
        ("struct ckpt_errors", "ERRORS", {"last": 1}),
        ("struct ckpt_contained", "CONTAINED", {"total": 1}),
        ("struct ckpt_test_obj", "TEST_STAT", {"id": 1, "refs": 1}),
        ("struct ckpt_test_obj", "TEST_PUT", {"id": 1, "grabs": 1}),
        ("struct ckpt_batch", "FETCH_BATCH", {"done": 1}),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else ",".join(v),
)
def test_unused_fields_must_be_zero(
    ctx: Context, ctype: str, req: str, fields: dict[str, int]
) -> None:
    t = ctx.test_new()
    ctx.insert(1, t, ObjType.TEST)
    s = ffi.new(f"{ctype} *")
    for k, v in fields.items():
        setattr(s, k, v)
    if ctype == "struct ckpt_batch":
        s.item_size = ffi.sizeof("struct ckpt_obj_arg")
    with raises_errno(E.EINVAL):
        ctx.ioctl(getattr(lib, f"CKPT_IOC_{req}"), s)


def test_ioctl_magic_is_not_listed_for_another_driver() -> None:
    # 0xCB is "CBM serial IEC bus" in ioctl-number.rst; 0xC7 is free there
    assert lib.CKPT_IOC_MAGIC == 0xC7
    assert lib.CKPT_ABI_VERSION >= 3  # the ABI that moved the magic, or later


def test_module_counts_back_to_zero(observer: Context) -> None:
    counts = mod_counts(observer)
    assert counts["mod_contexts"] == 1
    assert counts["mod_objs"] == counts["mod_defers"] == counts["mod_test_live"] == 0
