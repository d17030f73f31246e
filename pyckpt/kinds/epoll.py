"""epoll: items saved after every file, restored through a late step.

Checkpoint reads each epoll file's items from its fdinfo (tfd, events, data,
and the target's inode) and finds each target among the tree's files with
``kcmp(KCMP_EPOLL_TFD)``; a target no fd of the tree holds is linux-cr's
checkpoint leak, reported with its path and original fd.  EPOLL records come
after every task, so every target is defined first; restart creates empty
epoll files with the other files and adds the items once the tasks hold
their fds (a helper fetches the epoll files and their targets from the
hash): linux-cr deferred epoll items through its deferqueue the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from pyckpt import stub
from pyckpt.abi import FileKind, HdrType, ffi
from pyckpt.device import Context
from pyckpt.errors import CheckpointError, ImageError, RestartError
from pyckpt.kinds.base import Collector, FdRef, Kind, Objects, Plan, Reader, Writer
from pyckpt.kinds.regular import SETFL
from pyckpt.model import File, Image
from pyckpt.names import dot_quoted, epoll_events_names
from pyckpt.records import Layout, Record, Var, bad, decode_fields
from pyckpt.syscalls import epoll_add
from pyckpt.syscalls import kcmp_epoll_tfd as _kcmp_epoll_tfd  # tests wrap it

_EPOLL_ITEM = re.compile(
    r"tfd:\s*(-?\d+)\s+events:\s*([0-9a-fA-F]+)\s+data:\s*([0-9a-fA-F]+)"
    r"\s+pos:\s*(-?\d+)\s+ino:\s*([0-9a-fA-F]+)\s+sdev:\s*([0-9a-fA-F]+)"
)
_ITEM = "struct ckpt_epoll_item"


@dataclass(slots=True)
class EpollItem:
    """One epoll watch: its target file by objref, as epoll_ctl() took it."""

    target: int
    tfd: int
    events: int
    data: int


def _item_view(raw: bytes) -> Any:
    """The items of ``raw`` as a cffi array over its bytes (no copy)."""
    return ffi.from_buffer(f"{_ITEM}[]", raw)


class EpollItems(Sequence[EpollItem]):
    """An EPOLL record's items, decoded one at a time from its bytes: a
    million items stay 24 MiB instead of a million Python objects."""

    __slots__ = ("_raw", "_view")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._view = _item_view(raw)

    def __len__(self) -> int:
        return len(self._view)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        it = self._view[i]
        return EpollItem(it.target, it.tfd, it.events, it.data)

    def __iter__(self) -> Iterator[EpollItem]:
        for it in self._view:
            yield EpollItem(it.target, it.tfd, it.events, it.data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EpollItems):
            return self._raw == other._raw
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"EpollItems({list(self)!r})"


@dataclass
class Epoll:
    """EPOLL: the items of one epoll file (written after every task).

    ``items`` is a list, or an EpollItems as Image.from_bytes() makes it.
    """

    objref: int
    items: Sequence[EpollItem] = field(default_factory=list)


def epolls(image: Image) -> dict[int, Epoll]:
    """The image's epoll sets by objref: this kind's state, in the image."""
    return image.extra.setdefault("epoll", {})


def _check_epoll(rec: Record, name: str) -> None:
    f = rec.fields
    if f["objref"] <= 0:
        raise bad(rec, name, f"objref {f['objref']} <= 0")
    # one int per item, not a tuple: memory stays a small multiple of the record
    seen: set[int] = set()
    for i, it in enumerate(_item_view(f["items"])):
        target, tfd = it.target, it.tfd
        if getattr(it, "__pad"):
            raise bad(rec, name, f"non-zero padding in item {i}")
        if target <= 0:
            raise bad(rec, name, f"item {i}: target {target} <= 0")
        key = (target << 32) | (tfd & 0xFFFFFFFF)
        if key in seen:
            raise bad(rec, name, f"item {i}: target {target} fd {tfd} twice")
        seen.add(key)


def unpack_items(raw: bytes) -> list[dict[str, Any]]:
    """Items as dicts (iter_records' unpacked view)."""
    return [decode_fields(_ITEM, it) for it in _item_view(raw)]


# ---- checkpoint ----------------------------------------------------------------


def _kernel_dev(sdev: int) -> tuple[int, int]:
    """fdinfo's sdev is the kernel's dev_t: 12-bit major, 20-bit minor."""
    return sdev >> 20, sdev & 0xFFFFF


def _pids() -> Iterator[int]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def _holder_outside(ep: FdRef, tfd: int, ino: int, sdev: tuple[int, int]) -> str:
    """Who holds an epoll target outside the tree (error path only: a /proc scan)."""
    for pid in _pids():
        with contextlib.suppress(OSError):
            for name in os.listdir(f"/proc/{pid}/fd"):
                path = f"/proc/{pid}/fd/{name}"
                st = os.stat(path)
                if (
                    st.st_ino != ino
                    or (os.major(st.st_dev), os.minor(st.st_dev)) != sdev
                ):
                    continue
                if _kcmp_epoll_tfd(pid, int(name), ep.pid, ep.fd, tfd, 0):
                    with open(f"/proc/{pid}/comm") as c:
                        comm = c.read().strip()
                    link = os.readlink(path)
                    return f"; held outside by pid {pid} ({comm}) fd {name} ({link})"
    return ""


def _epoll_leak(
    ep: FdRef, tfd: int, ino: int, sdev: tuple[int, int], refs: list[FdRef]
) -> str:
    """A checkpoint leak: an epoll target that no fd of the tree holds."""
    target = f"ino {ino} on dev {sdev[0]}:{sdev[1]}"
    for r in refs:
        st = os.stat(f"/proc/{r.pid}/fd/{r.fd}")
        if st.st_ino == ino and (os.major(st.st_dev), os.minor(st.st_dev)) == sdev:
            # every anon file shares one inode: only its kind is known
            anon = r.link.startswith("anon_inode:")
            target = "anon_inode" if anon else r.link
            break
    outside = _holder_outside(ep, tfd, ino, sdev)
    return (
        f"{ep.where()}: checkpoint leak: epoll target {target} (original fd {tfd}) "
        f"is not open in the tree{outside}"
    )


def _by_number(
    at: dict[tuple[int, int], FdRef],
    owners: list[int],
    ep: FdRef,
    tfd: int,
    toff: int,
) -> int | None:
    """The item's target found by its own number: the file at fd tfd in a
    task holding the epoll (the adder's table), confirmed by one kcmp each."""
    for pid in owners:
        c = at.get((pid, tfd))
        if c is None:
            continue
        try:
            if _kcmp_epoll_tfd(c.pid, c.fd, ep.pid, ep.fd, tfd, toff):
                return c.objref
        except OSError:
            continue  # e.g. no such item at toff: the search decides
    return None


class _Search:
    """The fallback: every file of the tree with the target's inode, each
    tried by kcmp (all anonymous files share one inode, so for them this is
    a walk over every one: only for items the number did not find)."""

    def __init__(self, col: Collector) -> None:
        self.col = col
        self.by_inode: dict[tuple[int, int, int], list[int]] | None = None

    def find(
        self, ep: FdRef, tfd: int, toff: int, ino: int, sdev: tuple[int, int]
    ) -> int | None:
        col = self.col
        if self.by_inode is None:
            # every file met, the unsupported ones too: they are reported already
            self.by_inode = {}
            for o, r in col.first.items():
                st = r.stat  # the walk's identity: no copy of the fd
                key = (st.st_ino, os.major(st.st_dev), os.minor(st.st_dev))
                self.by_inode.setdefault(key, []).append(o)
        for objref in self.by_inode.get((ino, *sdev), ()):
            c = col.first[objref]
            try:
                if _kcmp_epoll_tfd(c.pid, c.fd, ep.pid, ep.fd, tfd, toff):
                    return objref
            except OSError as e:
                raise CheckpointError(
                    f"{ep.where()}: kcmp(KCMP_EPOLL_TFD) for tfd {tfd}: {e}"
                ) from e
        return None


# ---- restart: the late step ----------------------------------------------------


def _epoll_create() -> int:
    ep = select.epoll()
    try:
        return os.dup(ep.fileno())  # the fd outlives the object
    finally:
        ep.close()


def _epoll_helper(ctx: Context, epolls: list[Epoll], wfd: int) -> NoReturn:

    try:
        stub.child_init()
        stub.close_all_except({ctx.fileno(), wfd})
        refs = stub.unique(
            [ep.objref for ep in epolls]
            + [it.target for ep in epolls for it in ep.items]
        )
        floor = max([it.tfd for ep in epolls for it in ep.items] + [2]) + 1
        stub.make_room(floor + len(refs) + 3)
        got = ctx.fetch_many(refs)
        os.close(ctx.fileno())
        tmp = stub.move_above(dict(zip(refs, got)) | {0: wfd}, floor)
        wfd = tmp.pop(0)
        for ep in epolls:
            for it in ep.items:
                # the target at its recorded number, so that fdinfo shows tfd;
                # two syscalls an item: the next dup2 to that number closes
                # this one, and our exit the rest (tmp is above every tfd)
                os.dup2(tmp[it.target], it.tfd)
                try:
                    epoll_add(tmp[ep.objref], it.tfd, it.events, it.data)
                except OSError as e:
                    raise RestartError(
                        f"epoll {ep.objref}: add target {it.target} as tfd "
                        f"{it.tfd} events {it.events:#x}: {e.strerror}"
                    ) from e
        stub.say(wfd, "ok")
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - the helper never returns either
        with contextlib.suppress(BaseException):
            stub.say(wfd, f"error {e}")
    os._exit(1)


def _restore_epolls(ctx: Context, epolls: list[Epoll], timeout: float) -> None:
    if not epolls:
        return
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    pid = 0
    eof = False
    status = -1
    out = b""
    try:
        pid = os.fork()
        if pid == 0:
            _epoll_helper(ctx, epolls, wfd)
        os.close(wfd)
        wfd = -1
        deadline = time.monotonic() + timeout
        p = select.poll()
        p.register(rfd, select.POLLIN)
        while time.monotonic() < deadline:
            if p.poll(max(0, deadline - time.monotonic()) * 1000):
                chunk = os.read(rfd, 65536)
                if not chunk:
                    eof = True
                    break
                out += chunk
    finally:
        # reaped on every path: timeout, error, KeyboardInterrupt
        if pid > 0:
            if not eof:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)
    msg = out.decode(errors="replace").strip()
    if status != 0 or msg != "ok":
        msg = msg.removeprefix("error ") or f"helper status {status:#x}"
        raise RestartError(f"epoll items: {msg}")


class EpollKind(Kind):
    name = "epoll"
    dot_shape = "hexagon"
    reparse = True
    kinds = (FileKind.EPOLL,)
    reported = frozenset({FileKind.ANON})
    records = (
        (
            HdrType.EPOLL,
            Layout(
                "struct ckpt_hdr_epoll",
                (Var("items", "nr_items", "CKPT_EPOLL_ITEMS_MAX", _ITEM),),
            ),
            _check_epoll,
        ),
    )
    trailers = (HdrType.EPOLL,)

    # ---- checkpoint ----

    def claims(self, kind: FileKind, r: FdRef) -> bool:
        return r.link == "anon_inode:[eventpoll]"

    def checkpoint(self, col: Collector, f: File, r: FdRef) -> bool:
        f.kind = FileKind.EPOLL
        return True

    def collect(self, col: Collector) -> None:
        # (pid, fd) -> the fd's ref: an item's tfd is an fd number in the
        # table of a task that holds the epoll, which is where its target
        # almost always still is (one kcmp confirms it)
        at: dict[tuple[int, int], FdRef] | None = None
        search = _Search(col)
        for f in col.of_kind(FileKind.EPOLL):
            objref = f.objref
            if at is None:
                at = {(r.pid, r.fd): r for r in col.refs}
            ep = col.first[objref]
            # the epoll's other holders: an item may have been added by one
            owners = list(dict.fromkeys(r.pid for r in col.holders[objref]))
            epoll = Epoll(objref=objref)
            # kcmp's toff: the how-many-th item with this tfd (fdinfo and
            # kcmp walk the same rbtree): two items may share a number
            nth: dict[int, int] = {}
            for m in _EPOLL_ITEM.finditer(ep.fdinfo):
                tfd, events, data = int(m[1]), int(m[2], 16), int(m[3], 16)
                toff = nth.get(tfd, 0)
                nth[tfd] = toff + 1
                target = _by_number(at, owners, ep, tfd, toff)
                if target is None:
                    # closed or reused in every holder (the file lives on
                    # elsewhere, e.g. dup'ed): the search by inode
                    ino, sdev = int(m[5], 16), _kernel_dev(int(m[6], 16))
                    target = search.find(ep, tfd, toff, ino, sdev)
                if target is None:
                    col.problems.append(_epoll_leak(ep, tfd, ino, sdev, col.refs))
                    continue
                epoll.items.append(EpollItem(target, tfd, events, data))
            epolls(col.image)[objref] = epoll

    # ---- the image ----

    def write_trailers(self, w: Writer, image: Image) -> None:
        for objref in sorted(epolls(image)):
            its = epolls(image)[objref].items
            if isinstance(its, EpollItems):
                items: Any = its._raw  # already packed
            else:
                items = [
                    {
                        "target": i.target,
                        "tfd": i.tfd,
                        "events": i.events,
                        "data": i.data,
                    }
                    for i in its
                ]
            w.add(
                HdrType.EPOLL, w.file_tags[objref], {"objref": objref}, {"items": items}
            )

    def read_trailer(self, p: Reader, image: Image, rec: Record) -> None:
        objref = rec.fields["objref"]
        known = p.defs.get(objref)
        if (
            known is None
            or known.what != "file"
            or known.rec.fields["kind"] != FileKind.EPOLL
        ):
            raise ImageError(
                rec.offset, f"EPOLL record: objref {objref} is not an EPOLL file"
            )
        p.ptag(rec, known.rec.tag, "its FILE")
        if known.trailer_at is not None:
            raise ImageError(
                rec.offset,
                f"EPOLL record: objref {objref} defined twice (first at offset "
                f"{known.trailer_at})",
            )
        known.trailer_at = rec.offset
        raw = rec.fields["items"]
        for i, it in enumerate(_item_view(raw)):
            target = it.target
            d = p.defs.get(target)
            if d is None or d.what != "file":
                raise ImageError(
                    rec.offset,
                    f"EPOLL record: item {i}: target {target} names no file",
                )
        epolls(image)[objref] = Epoll(objref, EpollItems(raw))

    def check_model(self, image: Image) -> None:
        for key, ep in epolls(image).items():
            if key != ep.objref:
                raise ValueError(f"Image.epolls[{key}] has objref {ep.objref}")
        bad_ = sorted(
            k
            for k in epolls(image)
            if k not in image.files or image.files[k].kind != FileKind.EPOLL
        )
        if bad_:
            raise ValueError(f"epolls {bad_} are not EPOLL files: cannot be written")

    # ---- restart ----

    def check(self, files: list[File], plan: Plan) -> None:
        image = plan.image
        for ref, ep in epolls(image).items():
            f = image.files.get(ref)
            if f is None or f.kind != FileKind.EPOLL:
                raise RestartError(f"epoll record {ref}: not an epoll file")
            for it in ep.items:
                if it.target not in image.files or not 0 <= it.tfd < plan.nofile:
                    raise RestartError(
                        f"epoll {ref}: item target {it.target} tfd {it.tfd} invalid"
                    )

    def restore(self, objs: Objects, files: list[File], plan: Plan) -> None:
        for f in files:
            fd = objs.keep(_epoll_create())
            if f.f_flags & SETFL:
                fcntl.fcntl(fd, fcntl.F_SETFL, f.f_flags & SETFL)
            objs.insert(f.objref, fd)
            objs.done()

    def after_spawn(
        self, ctx: Context, image: Image, plan: Plan, timeout: float
    ) -> None:
        sets = [ep for ep in epolls(image).values() if len(ep.items)]
        _restore_epolls(ctx, sets, timeout)

    # ---- show ----

    def describe(self, f: File) -> str:
        return "epoll"

    def counts(self, image: Image) -> str:
        return f"{len(epolls(image))} epolls"

    def dot(self, image: Image) -> list[str]:
        """A dashed edge from the epoll file to each item's target."""
        out = []
        for ref, ep in sorted(epolls(image).items()):
            for i in ep.items:
                label = dot_quoted(f"tfd {i.tfd} {epoll_events_names(i.events)}")
                out.append(
                    f"  file_{ref} -> file_{i.target} [style=dashed, label={label}];"
                )
        return out

    def details(self, image: Image) -> list[str]:

        lines = []
        for ref in sorted(epolls(image)):
            ep = epolls(image)[ref]
            lines.append(f"epoll {ref}: {len(ep.items)} items")
            for i in ep.items:
                lines.append(
                    f"  target {i.target} tfd {i.tfd} "
                    f"events {epoll_events_names(i.events)} data {i.data:#x}"
                )
        return lines


KIND = EpollKind()
