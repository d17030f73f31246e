"""Context: one open() of /dev/ckpt, i.e. one kernel checkpoint/restart context.

Each method is one ioctl (a batch method: one ioctl per CKPT_BATCH_MAX items)
on a struct from ckpt.h allocated through cffi; a failure raises CkptError
with the errno and the error-log entries the kernel wrote during that call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno as _errno
import functools
import operator
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Self

from pyckpt.abi import (
    DEVICE,
    DeferAction,
    FileKind,
    FMode,
    ObjFlag,
    ObjType,
    Policy,
    State,
    ffi,
    ioctl_name,
    lib,
    struct_fields,
)
from pyckpt.errors import CkptError, DeviceMissingError, ErrorEntry
from pyckpt.records import flat

__all__ = [
    "Context",
    "FileInfo",
    "Leak",
    "LookupResult",
    "PipeState",
    "Stats",
    "TaskCreds",
    "TaskFd",
    "TestStat",
]

BATCH_MAX: int = lib.CKPT_BATCH_MAX  # items per batch ioctl
# every request goes through this one function (tests wrap it to count calls)
_ioctl = lib.ckpt_ioctl
_OBJ_ARG = "struct ckpt_obj_arg"


class FileInfo(NamedTuple):
    """The file record body the kernel fills the first time it sees a file
    (a tuple, not a frozen dataclass: a walk makes 10^4 of them, and a
    frozen dataclass sets each field through object.__setattr__)."""

    kind: FileKind
    f_flags: int
    f_mode: FMode
    inode_objref: int
    pos: int
    # what fstat(2) says, comparable with os.stat()'s (ckpt.h, ABI 3)
    st_dev: int = 0
    st_ino: int = 0
    st_nlink: int = 0
    st_rdev: int = 0
    st_mode: int = 0
    st_uid: int = 0
    st_gid: int = 0
    st_size: int = 0


class LookupResult(NamedTuple):
    # a tuple, not a dataclass: batches make 10^5 of them
    objref: int
    first: bool
    file: FileInfo | None  # FILE objects, first time only


class PipeState(NamedTuple):
    """An anonymous pipe as the module saw it (CKPT_DETAIL_PIPE)."""

    nbytes: int  # buffered (FIONREAD)
    size: int  # capacity (F_GETPIPE_SZ)
    no_reader: bool  # read end closed everywhere
    no_writer: bool  # write end closed everywhere


class TaskFd(NamedTuple):
    """One fd of a task as CKPT_IOC_TASK_FDS reports it.  With detail (the
    default) a first file also carries what /proc would say of it, where the
    module could tell: None where it could not (userspace then asks /proc)."""

    fd: int
    objref: int
    first: bool  # the file is new in the hash
    cloexec: bool
    file: FileInfo | None  # first only
    link: str | None = None  # readlink of /proc/PID/fd/FD
    fdinfo: str | None = None  # the file's own fdinfo lines (anon files)
    pipe: PipeState | None = None  # anonymous pipes
    # a task of the tree holds the file's lock (a stalled read, write or
    # epoll_wait): its pipe state or fdinfo is unknown until it moves
    busy: bool = False


class TaskCreds(NamedTuple):
    """What limits a task beyond its ids (CKPT_IOC_TASK_CREDS): its
    securebits and capability sets, each a mask of bit CAP_*."""

    securebits: int
    cap_inheritable: int
    cap_permitted: int
    cap_effective: int
    cap_bset: int
    cap_ambient: int


class Leak(NamedTuple):
    """An object referenced more often than the collected tree accounts for."""

    objref: int
    type: ObjType
    users: int  # references lookup_add met
    refs: int  # references the kernel counts (files: less the hash's own)


@dataclass(frozen=True)
class TestStat:
    __test__ = False  # not a pytest test class despite its name

    id: int
    refs: int
    grabs: int
    drops: int


def _make_stats_class() -> type:
    # The fields are those of struct ckpt_stats, read from the header, so
    # a field added there appears here without a second copy of the list.
    fields = [(name, int) for name in struct_fields("struct ckpt_stats")]
    return dataclasses.make_dataclass(
        "Stats", fields, frozen=True, namespace={"__module__": __name__}
    )


Stats = _make_stats_class()
Stats.__doc__ = "struct ckpt_stats; policy is a Policy and state a State."


def _file_info(c: Any) -> FileInfo:
    # FileInfo's fields are struct ckpt_file_info's, by name and in order
    return FileInfo(
        FileKind(c.kind),
        c.f_flags,
        FMode(c.f_mode),
        *(getattr(c, name) for name in FileInfo._fields[3:]),
    )


_FIRST = int(ObjFlag.FIRST)  # plain ints: enum arithmetic is slow per item
_FILE = int(ObjType.FILE)


def _lookup_result(a: Any) -> LookupResult:
    if a.flags & _FIRST:
        info = _file_info(a.file) if a.type == _FILE else None
        return LookupResult(a.objref, True, info)
    return LookupResult(a.objref, False, None)


_FD_FIRST = lib.CKPT_FD_FIRST
_FD_CLOEXEC = lib.CKPT_FD_CLOEXEC
_DETAIL_LINK = lib.CKPT_DETAIL_LINK
_DETAIL_FDINFO = lib.CKPT_DETAIL_FDINFO
_DETAIL_PIPE = lib.CKPT_DETAIL_PIPE
_DETAIL_BUSY = lib.CKPT_DETAIL_BUSY
_NO_READER = lib.CKPT_PIPE_NO_READER
_NO_WRITER = lib.CKPT_PIPE_NO_WRITER
# enum lookups by value, not Enum.__call__: 10^4 entries per walk
_KINDS = {k.value: k for k in FileKind}
_FMODES = {m: FMode(m) for m in range(4)}
_DETAIL = ["detail", "pipe_bytes", "pipe_size", "pipe_flags"]
_TEXT_MAX = lib.CKPT_DETAIL_TEXT_MAX


@functools.cache
def _fd_entries(detail: bool) -> tuple[Any, Any, list[int], list[int], tuple[int, int]]:
    """struct ckpt_fd_entry (ckpt_fd_detail with detail) as two precompiled
    Structs from cffi's own offsets: one of (fd, flags, objref) only, for
    the one iter_unpack over a walk of 10^4 fds, and the whole entry but
    its text, unpacked for first files only; the item indices of the
    file's fields and the detail's, and the offsets of link and fdinfo."""
    ctype = "struct ckpt_fd_detail" if detail else "struct ckpt_fd_entry"
    e = ("entry",) if detail else ()
    head = [(*e, n) for n in ("fd", "flags", "objref")]
    slim, sat = flat(ctype, only=tuple(head))
    # unpacked as (fd, flags, objref): in that order
    if [sat[h] for h in head] != [0, 1, 2]:
        raise ImportError(f"{ctype}: fd, flags, objref are not in that order")
    # the text fields: sliced from the buffer only where the detail says so
    text = (("link",), ("fdinfo",)) if detail else ()
    layout, at = flat(ctype, skip=text)
    fields = [at[(*e, "file", n)] for n in FileInfo._fields]
    extra = [at[(n,)] for n in _DETAIL] if detail else []
    texts = (at.get(("link",), 0), at.get(("fdinfo",), 0))
    return slim, layout, fields, extra, texts


def _text(raw: bytes, at: int) -> str:
    end = raw.find(b"\0", at, at + _TEXT_MAX)
    return raw[at : end if end >= 0 else at + _TEXT_MAX].decode(
        errors="surrogateescape"
    )


def _task_fds(raw: bytes, detail: bool) -> Iterator[TaskFd]:
    slim, layout, (ik, iff, ifm, *ist), extra, texts = _fd_entries(detail)
    idet, ipb, ips, ipf = extra or (0,) * 4
    olink, oinfo = texts
    stat = operator.itemgetter(*ist)  # the FileInfo fields after f_mode
    unpack, stride = layout.unpack_from, layout.size
    # tuple.__new__: a NamedTuple's own __new__ is a Python function
    new = tuple.__new__
    at = -stride
    for fd, flags, objref in slim.iter_unpack(raw):
        at += stride
        cloexec = bool(flags & _FD_CLOEXEC)
        if not flags & _FD_FIRST:
            yield new(
                TaskFd, (fd, objref, False, cloexec, None, None, None, None, False)
            )
            continue
        v = unpack(raw, at)
        info = new(FileInfo, (_KINDS[v[ik]], v[iff], _FMODES[v[ifm]], *stat(v)))
        det = v[idet] if detail else 0
        if not det:
            yield new(
                TaskFd, (fd, objref, True, cloexec, info, None, None, None, False)
            )
            continue
        pipe = None
        if det & _DETAIL_PIPE:
            pf = v[ipf]
            pipe = new(
                PipeState,
                (v[ipb], v[ips], bool(pf & _NO_READER), bool(pf & _NO_WRITER)),
            )
        yield new(
            TaskFd,
            (
                fd,
                objref,
                True,
                cloexec,
                info,
                _text(raw, at + olink) if det & _DETAIL_LINK else None,
                _text(raw, at + oinfo) if det & _DETAIL_FDINFO else None,
                pipe,
                bool(det & _DETAIL_BUSY),
            ),
        )


def _chunks(items: Sequence[Any]) -> Iterable[tuple[int, Sequence[Any]]]:
    for start in range(0, len(items), BATCH_MAX):
        yield start, items[start : start + BATCH_MAX]


class Context:
    """A kernel checkpoint/restart context: objhash, deferqueue, error log.

    Closing it (close(), the with block, or garbage collection) tears the
    kernel context down and frees everything it holds; close() is always safe.
    """

    def __init__(
        self,
        path: str = DEVICE,
        *,
        policy: Policy | None = None,
        hash_bits: int = 0,
        autogrow: bool = False,
    ) -> None:
        self._fd = -1
        self._err_seen = 0  # last error-log seq this object has read
        # task_fds()'s entries, kept for the next task: (ctype, batch, array)
        self._walk_buf: tuple[str, int, Any] | None = None
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise DeviceMissingError(
                _errno.ENOENT,
                f"open({path})",
                hint="the ckpt module is not loaded here; run inside the VM: vm/run.sh",
            ) from None
        if policy is not None or hash_bits or autogrow:
            try:
                self.setup(
                    policy=Policy.CLEAR_EARLY if policy is None else policy,
                    hash_bits=hash_bits,
                    autogrow=autogrow,
                )
            except BaseException:
                self.close()
                raise

    # ---- lifetime ---------------------------------------------------------

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("operation on a closed ckpt context")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Tear the kernel context down (if this was its last fd); idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # a context dropped without close() must not pin its objects
        with contextlib.suppress(OSError):
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"<pyckpt.Context {self.path} {state}>"

    # ---- the ioctl call and its errors -----------------------------------

    def ioctl(self, req: int, arg: Any = ffi.NULL, *, name: str | None = None) -> int:
        """Issue one request on the context; errors raise CkptError.

        arg is a cffi pointer (or NULL); raw request numbers are allowed, so
        that tests can send shorter, longer or unknown requests.
        """
        fd = self.fileno()
        ret = _ioctl(fd, req, arg)
        if ret < 0:
            raise self._error(-ret, name or ioctl_name(req))
        return ret

    def _error(self, err: int, name: str, **extra: Any) -> CkptError:
        # Every failure reads the log up to its newest entry, so the entries
        # after the last seq seen are this call's own (the kernel logs under
        # the context's mutex); only another process sharing this context
        # fd could slip its own entries in between.
        try:
            entries = self.errors(since=self._err_seen)
        except CkptError:
            entries = []  # the log itself unreadable: keep the first error
        return CkptError(err, name, entries, **extra)

    def errors(self, since: int = 0) -> list[ErrorEntry]:
        """Error-log entries with seq > since, oldest first."""
        buf = ffi.new("struct ckpt_err_entry[]", lib.CKPT_ERR_LOG_MAX)
        arg = ffi.new("struct ckpt_errors *")
        arg.buf = int(ffi.cast("uintptr_t", buf))
        arg.count = lib.CKPT_ERR_LOG_MAX
        arg.since = since
        arg.entry_size = ffi.sizeof("struct ckpt_err_entry")
        ret = _ioctl(self.fileno(), lib.CKPT_IOC_ERRORS, arg)
        if ret < 0:
            # not through self.ioctl(): reading the log must not recurse
            raise CkptError(-ret, "CKPT_IOC_ERRORS")
        self._err_seen = max(self._err_seen, arg.last)
        return [
            ErrorEntry(
                seq=e.seq,
                err=e.err,
                objref=e.objref,
                func=ffi.string(e.func).decode(errors="replace"),
                msg=ffi.string(e.msg).decode(errors="replace"),
            )
            for e in buf[0 : arg.count]
        ]

    # ---- setup, release, stats --------------------------------------------

    def version(self) -> tuple[int, int]:
        """(ABI version, CKPT_FEATURE_* bits) of the loaded module."""
        arg = ffi.new("struct ckpt_version *")
        self.ioctl(lib.CKPT_IOC_VERSION, arg)
        return arg.abi_version, arg.features

    def setup(
        self,
        policy: Policy | int = Policy.CLEAR_EARLY,
        hash_bits: int = 0,
        autogrow: bool = False,
        *,
        max_objs: int = 0,
        max_defers: int = 0,
        max_tests: int = 0,
    ) -> None:
        """Choose the policy, the bucket count (2**hash_bits; 0: default) and
        the context's limits (0: the defaults of ckpt.h; a full collection
        refuses one more with ENOSPC)."""
        arg = ffi.new("struct ckpt_setup *")
        arg.policy = policy
        arg.hash_bits = hash_bits
        arg.flags = lib.CKPT_SETUP_AUTOGROW if autogrow else 0
        arg.max_objs = max_objs
        arg.max_defers = max_defers
        arg.max_tests = max_tests
        self.ioctl(lib.CKPT_IOC_SETUP, arg)

    def release(self) -> None:
        """The moment restarted tasks are let go: clear/free per policy."""
        self.ioctl(lib.CKPT_IOC_RELEASE)

    def stats(self) -> Any:
        """A Stats with every field of struct ckpt_stats."""
        arg = ffi.new("struct ckpt_stats *")
        self.ioctl(lib.CKPT_IOC_STATS, arg)
        values = {f.name: getattr(arg, f.name) for f in dataclasses.fields(Stats)}
        values["policy"] = Policy(values["policy"])
        values["state"] = State(values["state"])
        return Stats(**values)

    # ---- objects, one at a time --------------------------------------------

    def lookup_add(
        self, handle: int, type: ObjType | int = ObjType.FILE
    ) -> LookupResult:
        """Checkpoint side: the objref of the object behind an fd (or test id)."""
        arg = ffi.new(f"{_OBJ_ARG} *")
        arg.type = type
        arg.handle = handle
        self.ioctl(lib.CKPT_IOC_LOOKUP_ADD, arg)
        return _lookup_result(arg)

    def insert(
        self, objref: int, handle: int, type: ObjType | int = ObjType.FILE
    ) -> None:
        """Restart side: index the object behind an fd (or test id) by objref."""
        arg = ffi.new(f"{_OBJ_ARG} *")
        arg.type = type
        arg.handle = handle
        arg.objref = objref
        self.ioctl(lib.CKPT_IOC_INSERT, arg)

    def fetch(
        self, objref: int, type: ObjType | int = ObjType.FILE, cloexec: bool = True
    ) -> int:
        """Restart side: a new fd on the object's open file (FILE), or its id (TEST)."""
        arg = ffi.new(f"{_OBJ_ARG} *")
        arg.type = type
        arg.objref = objref
        arg.flags = ObjFlag.CLOEXEC if cloexec else 0
        # the handle is the ioctl's value, as pidfd_getfd()'s fd (ABI 5)
        return self.ioctl(lib.CKPT_IOC_FETCH, arg)

    # ---- objects, in batches ------------------------------------------------

    def _batch(
        self,
        req: int,
        items: Sequence[Any],
        fill: Any,
        result: Any,
    ) -> list[Any]:
        """Run items through a batch request, CKPT_BATCH_MAX per ioctl.

        On failure the CkptError carries done (items completed over all
        chunks) and results (theirs: fetched fds must still be closed).
        """
        results: list[Any] = []
        for start, chunk in _chunks(items):
            arr = ffi.new(f"{_OBJ_ARG}[]", len(chunk))
            for a, item in zip(arr, chunk):
                fill(a, item)
            b = ffi.new("struct ckpt_batch *")
            b.items = int(ffi.cast("uintptr_t", arr))
            b.count = len(chunk)
            b.item_size = ffi.sizeof(_OBJ_ARG)
            ret = _ioctl(self.fileno(), req, b)
            if ret < 0:
                done = min(b.done, len(chunk))
                results.extend(result(arr[i]) for i in range(done))
                raise self._error(
                    -ret, ioctl_name(req), done=start + done, results=results
                )
            results.extend(result(a) for a in arr)
        return results

    def lookup_add_many(
        self,
        handles: Sequence[int | tuple[int, ObjType | int]],
        type: ObjType | int = ObjType.FILE,
    ) -> list[LookupResult]:
        """lookup_add for each handle (or (handle, type)), in order."""

        def fill(a: Any, item: int | tuple[int, int]) -> None:
            a.handle, a.type = item if isinstance(item, tuple) else (item, type)

        return self._batch(lib.CKPT_IOC_LOOKUP_ADD_BATCH, handles, fill, _lookup_result)

    def insert_many(
        self,
        items: Sequence[tuple[int, int] | tuple[int, int, ObjType | int]],
        type: ObjType | int = ObjType.FILE,
    ) -> None:
        """insert for each (objref, handle) or (objref, handle, type), in order."""

        def fill(a: Any, item: tuple[int, ...]) -> None:
            a.objref, a.handle = item[0], item[1]
            a.type = item[2] if len(item) > 2 else type

        self._batch(lib.CKPT_IOC_INSERT_BATCH, items, fill, lambda a: None)

    def fetch_many(
        self,
        objrefs: Sequence[int | tuple[int, ObjType | int]],
        type: ObjType | int = ObjType.FILE,
        cloexec: bool = True,
    ) -> list[int]:
        """fetch for each objref (or (objref, type)): the new fds / ids."""
        flags = ObjFlag.CLOEXEC if cloexec else 0

        def fill(a: Any, item: int | tuple[int, int]) -> None:
            a.objref, a.type = item if isinstance(item, tuple) else (item, type)
            a.flags = flags

        return self._batch(lib.CKPT_IOC_FETCH_BATCH, objrefs, fill, lambda a: a.handle)

    # ---- a task's fd table ------------------------------------------------

    def task_fds(
        self, pid: int, starttime: int, *, batch: int = 1024, detail: bool = True
    ) -> list[TaskFd]:
        """Every fd of task pid, in fd order, each file lookup_add'ed.

        starttime is field 22 of /proc/PID/stat (proc.starttime()): another
        task under a reused pid raises ESRCH.  One ioctl per batch fds; on
        failure the CkptError carries results (the fds walked before it,
        their files already in the hash).  detail: each first file's link,
        fdinfo and pipe state too (CKPT_TASK_FDS_DETAIL).
        """
        if not 1 <= batch <= BATCH_MAX:
            raise ValueError(f"batch {batch} not in 1..{BATCH_MAX}")
        ctype = "struct ckpt_fd_detail" if detail else "struct ckpt_fd_entry"
        size = ffi.sizeof(ctype)
        if self._walk_buf is None or self._walk_buf[:2] != (ctype, batch):
            # made once (10^3 entries of 616 bytes, zeroed): what each call
            # fills is copied out before the next one
            self._walk_buf = (ctype, batch, ffi.new(f"{ctype}[]", batch))
        entries = self._walk_buf[2]
        arg = ffi.new("struct ckpt_task_fds *")
        results: list[TaskFd] = []
        next_fd = 0
        while next_fd >= 0:
            arg.pid = pid
            arg.nr = batch
            arg.starttime = starttime
            arg.next_fd = next_fd
            arg.flags = lib.CKPT_TASK_FDS_DETAIL if detail else 0
            arg.entries = int(ffi.cast("uintptr_t", entries))
            arg.entry_size = size
            ret = _ioctl(self.fileno(), lib.CKPT_IOC_TASK_FDS, arg)
            # a failed call says nr < batch; nr left as sent: nothing done
            # (the header was unwritable)
            done = arg.nr if ret >= 0 or arg.nr < batch else 0
            raw = bytes(ffi.buffer(entries, done * size))
            results.extend(_task_fds(raw, detail))
            if ret < 0:
                raise self._error(-ret, "CKPT_IOC_TASK_FDS", results=results)
            next_fd = arg.next_fd
        return results

    def task_creds(self, pid: int, starttime: int) -> TaskCreds:
        """Task pid's securebits and capability sets, with the access check
        of task_fds() (CKPT_FEATURE_TASK_CREDS); starttime as there."""
        arg = ffi.new("struct ckpt_task_creds *")
        arg.pid = pid
        arg.starttime = starttime
        self.ioctl(lib.CKPT_IOC_TASK_CREDS, arg)
        return TaskCreds(*(getattr(arg, f) for f in TaskCreds._fields))

    # ---- deferqueue -------------------------------------------------------

    def defer_add(
        self,
        action: DeferAction | int,
        *,
        objref: int = 0,
        arg: int = 0,
        tag: int = 0,
    ) -> None:
        """Enqueue one action of the fixed table (see the helpers below)."""
        d = ffi.new("struct ckpt_defer *")
        d.action = action
        d.objref = objref
        d.arg = arg
        d.tag = tag
        self.ioctl(lib.CKPT_IOC_DEFER_ADD, d)

    def defer_log(self, tag: int) -> None:
        """When run, append tag to the tag log (ordering tests)."""
        self.defer_add(DeferAction.LOG, tag=tag)

    def defer_drop(self, objref: int) -> None:
        """When run, drop the hash's reference on objref early."""
        self.defer_add(DeferAction.DROP, objref=objref)

    def defer_fail(self, err: int) -> None:
        """When run, fail with errno err (1..CKPT_ERRNO_MAX, EHWPOISON)."""
        self.defer_add(DeferAction.FAIL, arg=err)

    def defer_run(self) -> int:
        """Run the queue in FIFO order: the count run, or the first error."""
        return self.ioctl(lib.CKPT_IOC_DEFER_RUN)

    def tags(self) -> list[int]:
        """The tag log, oldest first."""
        t = ffi.new("struct ckpt_tags *")
        self.ioctl(lib.CKPT_IOC_TAGS, t)  # count 0: learn the total
        total = min(t.total, lib.CKPT_TAGS_MAX)
        if not total:
            return []
        buf = ffi.new("__u64[]", total)
        t.buf = int(ffi.cast("uintptr_t", buf))
        t.count = total
        t.total = 0  # an output: must be zero on input
        self.ioctl(lib.CKPT_IOC_TAGS, t)
        return list(buf[0 : min(total, t.total)])

    # ---- leak detection -----------------------------------------------------

    def contained(self) -> list[Leak]:
        """Checkpoint side, after every task was collected: the objects also
        referenced from outside (linux-cr's ckpt_obj_contained); [] if none.

        Call it with no fd of your own open on a collected file: such a copy
        (a pidfd_getfd() one included) counts as an outside reference.
        Mappings of a file (mmap) are not counted (ckpt.h).
        """
        cap = BATCH_MAX
        buf = ffi.new("struct ckpt_leak[]", cap)
        arg = ffi.new("struct ckpt_contained *")
        arg.buf = int(ffi.cast("uintptr_t", buf))
        arg.count = cap
        arg.leak_size = ffi.sizeof("struct ckpt_leak")
        ret = _ioctl(self.fileno(), lib.CKPT_IOC_CONTAINED, arg)
        if ret < 0 and -ret != _errno.EBUSY:
            raise self._error(-ret, "CKPT_IOC_CONTAINED")
        if ret < 0:
            self.errors(since=self._err_seen)  # the leaks' entries: consumed
        return [
            Leak(objref=x.objref, type=ObjType(x.type), users=x.users, refs=x.refs)
            for x in buf[0 : arg.count]
        ]

    # ---- test objects ---------------------------------------------------------

    def test_new(self) -> int:
        """A new counted test object; the returned id is one reference."""
        t = ffi.new("struct ckpt_test_obj *")
        self.ioctl(lib.CKPT_IOC_TEST_NEW, t)
        return t.id

    def test_put(self, id: int) -> None:
        """Drop the creator's reference (the id stops naming the object)."""
        t = ffi.new("struct ckpt_test_obj *")
        t.id = id
        self.ioctl(lib.CKPT_IOC_TEST_PUT, t)

    def test_stat(self, id: int) -> TestStat:
        t = ffi.new("struct ckpt_test_obj *")
        t.id = id
        self.ioctl(lib.CKPT_IOC_TEST_STAT, t)
        return TestStat(id=t.id, refs=t.refs, grabs=t.grabs, drops=t.drops)
