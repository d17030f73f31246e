"""``pyckpt ls PID``: a live view of a tree's fds and what they share.

Which fds, in which tasks, share one open file description; both ends of a
pipe (the module's inode objref) or of a unix socket pair (sock_diag's peer
inode, matched to the module's inode objrefs); epoll items and their
targets.  The tree is NOT frozen: every task is read while it runs, so the
result is a snapshot that may race with the tree (an fd opened or closed
meanwhile), and says so.  Every fd is listed, whatever its kind, even one
checkpoint refuses: the /proc fd link and fdinfo name it.

How: the module's objhash in checkpoint mode (a Context) deduplicates
copies of the fds made with pidfd_getfd (``lookup_add_many``, one batch per
task), exactly as checkpoint does; the copies are closed after each batch
(the hash keeps its own reference until the context is closed, always
before returning).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pyckpt import proc, sockdiag
from pyckpt.abi import FileKind, FMode
from pyckpt.device import Context
from pyckpt.errors import CheckpointError, CkptError, Error
from pyckpt.names import dot_label, dot_quoted, epoll_events_names, o_flags_names, text
from pyckpt.proctree import Lister, root_process
from pyckpt.syscalls import kcmp_epoll_tfd, kcmp_files, pidfd_getfd

__all__ = ["LsError", "Snapshot", "snapshot", "summary", "to_dot", "to_json"]

RACE_NOTE = (
    "a live snapshot: the tree was not frozen, so it may have changed while it "
    "was read (fds opened or closed meanwhile)"
)

_EPOLL_ITEM = re.compile(
    r"tfd:\s*(-?\d+)\s+events:\s*([0-9a-fA-F]+)\s+data:\s*([0-9a-fA-F]+)"
    r"\s+pos:\s*(-?\d+)\s+ino:\s*([0-9a-fA-F]+)\s+sdev:\s*([0-9a-fA-F]+)"
)
_FLAGS = re.compile(r"^flags:\s*([0-7]+)", re.MULTILINE)
_POS = re.compile(r"^pos:\s*(\d+)", re.MULTILINE)
_O_CLOEXEC = 0o2000000


class LsError(Error):
    """The tree could not be listed at all (no such process, no module)."""


@dataclass
class FdView:
    """One fd of one task."""

    fd: int
    link: str  # readlink of /proc/PID/fd/FD
    flags: int  # f_flags from fdinfo (O_CLOEXEC included)
    objref: int = 0  # its open file description in the hash; 0: not read
    problem: str = ""  # why the module could not see it (it is still listed)

    @property
    def cloexec(self) -> bool:
        return bool(self.flags & _O_CLOEXEC)


@dataclass
class TaskView:
    pid: int
    ppid: int
    comm: str
    threads: int = 1
    zombie: bool = False
    files_pid: int = 0  # the first task of the tree sharing its fd table
    note: str = ""  # e.g. "this pyckpt ls": its fds are not read
    fds: list[FdView] = field(default_factory=list)


@dataclass
class FileView:
    """One open file description, as the module first met it."""

    objref: int
    kind: str  # reg, dir, fifo, pipe, chr, blk, sock, eventfd, epoll, ...
    f_flags: int
    f_mode: int
    pos: int
    inode: int  # the module's objref of its inode: pipe ends share one
    link: str
    holders: list[tuple[int, int]] = field(default_factory=list)  # (pid, fd)


@dataclass
class EpollItemView:
    tfd: int
    events: int
    data: int
    target: int = 0  # the target's open file description; 0: not in the tree


@dataclass
class Snapshot:
    root: int
    tasks: list[TaskView] = field(default_factory=list)
    files: dict[int, FileView] = field(default_factory=dict)  # objref -> file
    epolls: dict[int, list[EpollItemView]] = field(default_factory=dict)
    socket_peers: dict[int, int] = field(default_factory=dict)  # inode -> peer
    notes: list[str] = field(default_factory=list)

    # -- the sharing, derived --

    def shared_files(self) -> list[FileView]:
        """Open file descriptions held by more than one fd."""
        return [f for f in self.files.values() if len(f.holders) > 1]

    def pipes(self) -> dict[int, list[FileView]]:
        """Inode objref -> the open file descriptions of its ends (PIPE, FIFO)."""
        out: dict[int, list[FileView]] = {}
        for f in self.files.values():
            if f.kind in ("pipe", "fifo"):
                out.setdefault(f.inode, []).append(f)
        return out

    def socket_pairs(self) -> list[tuple[int, int]]:
        """Connected unix sockets with both ends in the tree, as inode objrefs."""
        pairs = []
        for a, b in self.socket_peers.items():
            if a < b and self.socket_peers.get(b) == a:
                pairs.append((a, b))
        return sorted(pairs)

    def by_inode(self, inode: int) -> list[FileView]:
        return [f for f in self.files.values() if f.inode == inode]

    def to_dict(self) -> dict[str, Any]:
        return {
            "note": RACE_NOTE,
            "root": self.root,
            "tasks": [asdict(t) for t in self.tasks],
            "files": [asdict(f) for f in self.files.values()],
            "sharing": {
                "open_files": [
                    {"objref": f.objref, "holders": f.holders}
                    for f in self.shared_files()
                ],
                "pipes": [
                    {"inode": ino, "ends": [f.objref for f in ends]}
                    for ino, ends in self.pipes().items()
                ],
                "socket_pairs": [
                    {
                        "inodes": [a, b],
                        "ends": [
                            [f.objref for f in self.by_inode(a)],
                            [f.objref for f in self.by_inode(b)],
                        ],
                    }
                    for a, b in self.socket_pairs()
                ],
                "epolls": [
                    {"objref": ref, "items": [asdict(i) for i in items]}
                    for ref, items in self.epolls.items()
                ],
            },
            "notes": list(self.notes),
        }


# ---- reading a live tree ----------------------------------------------------


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        return os.fsdecode(f.read())


def _kind(info_kind: FileKind, link: str) -> str:
    if info_kind == FileKind.ANON:
        # anon_inode:[eventfd], anon_inode:inotify, anon_inode:[pidfd] ...
        return link.removeprefix("anon_inode:").strip("[]") or "anon"
    return info_kind.name.lower()


def _why(e: OSError) -> str:
    if e.errno == _errno.EBADF:
        return "closed while it was listed"
    if e.errno == _errno.ESRCH:
        return "the task exited while it was listed"
    return e.strerror or str(e)


class _Reader:
    def __init__(self, ctx: Context, snap: Snapshot) -> None:
        self.ctx = ctx
        self.snap = snap
        self.stats: dict[int, tuple[int, int]] = {}  # objref -> (dev, ino)
        self.fdinfo: dict[tuple[int, int], str] = {}

    def task(self, pid: int, ppid: int) -> None:
        comm = ""
        with contextlib.suppress(OSError):
            comm = _read_text(f"/proc/{pid}/comm").rstrip("\n")
        t = TaskView(pid=pid, ppid=ppid, comm=comm)
        self.snap.tasks.append(t)
        t.zombie = proc.state(pid) == "Z"
        with contextlib.suppress(OSError):
            t.threads = len(os.listdir(f"/proc/{pid}/task"))
        if pid == os.getpid():
            t.note = "this pyckpt ls: its fds are not read"
            return
        try:
            names = sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))
        except OSError as e:
            if not t.zombie:
                t.note = f"cannot list its fds: {_why(e)}"
            return
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as e:
            t.note = f"cannot open it: {_why(e)}"
            pidfd = -1
        copies: list[tuple[FdView, int]] = []
        try:
            for n in names:
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{n}")
                    info = _read_text(f"/proc/{pid}/fdinfo/{n}")
                except OSError as e:
                    t.fds.append(FdView(n, "?", 0, problem=_why(e)))
                    continue
                m = _FLAGS.search(info)
                fd = FdView(n, link, int(m[1], 8) if m else 0)
                t.fds.append(fd)
                self.fdinfo[(pid, n)] = info
                if pidfd < 0:
                    fd.problem = t.note
                    continue
                try:
                    copies.append((fd, pidfd_getfd(pidfd, n)))
                except OSError as e:
                    fd.problem = f"pidfd_getfd: {_why(e)}"
            self._lookup(pid, copies)
        finally:
            for _, c in copies:
                os.close(c)
            if pidfd >= 0:
                os.close(pidfd)

    def _lookup(self, pid: int, copies: list[tuple[FdView, int]]) -> None:
        if not copies:
            return
        try:
            results = self.ctx.lookup_add_many([c for _, c in copies])
        except CkptError as e:
            for fd, _ in copies:
                fd.problem = f"the module could not look it up: {e}"
            return
        for (fd, copy), res in zip(copies, results):
            fd.objref = res.objref
            if res.first and res.file is not None:
                info = res.file
                pos = info.pos
                self.snap.files[res.objref] = FileView(
                    objref=res.objref,
                    kind=_kind(info.kind, fd.link),
                    f_flags=info.f_flags,
                    f_mode=int(info.f_mode),
                    pos=pos,
                    inode=info.inode_objref,
                    link=fd.link,
                )
                st = os.fstat(copy)
                self.stats[res.objref] = (st.st_dev, st.st_ino)
            f = self.snap.files.get(res.objref)
            if f is not None:
                f.holders.append((pid, fd.fd))

    def shared_tables(self) -> None:
        live = [t for t in self.snap.tasks if not t.zombie and not t.note]
        for i, t in enumerate(live):
            for first in live[:i]:
                if first.files_pid:
                    continue
                with contextlib.suppress(OSError):  # exited meanwhile
                    if kcmp_files(first.pid, t.pid) == 0:
                        t.files_pid = first.pid
                        break

    def epolls(self) -> None:
        first: dict[int, tuple[int, int]] = {
            ref: f.holders[0] for ref, f in self.snap.files.items() if f.holders
        }
        for ref, f in self.snap.files.items():
            if f.kind != "eventpoll" or not f.holders:
                continue
            pid, efd = f.holders[0]
            items = []
            nth: dict[int, int] = {}
            for m in _EPOLL_ITEM.finditer(self.fdinfo.get((pid, efd), "")):
                tfd, events, data = int(m[1]), int(m[2], 16), int(m[3], 16)
                ino, sdev = int(m[5], 16), int(m[6], 16)
                toff = nth.get(tfd, 0)
                nth[tfd] = toff + 1
                item = EpollItemView(tfd, events, data)
                dev = os.makedev(sdev >> 20, sdev & 0xFFFFF)
                for oref, (st_dev, st_ino) in self.stats.items():
                    if (st_dev, st_ino) != (dev, ino):
                        continue
                    cpid, cfd = first[oref]
                    try:
                        same = kcmp_epoll_tfd(cpid, cfd, pid, efd, tfd, toff)
                    except OSError:
                        same = False  # gone or not this item: not the target
                    if same:
                        item.target = oref
                        break
                items.append(item)
            self.snap.epolls[ref] = items

    def sockets(self) -> None:
        socks = {  # socket inode number -> the module's inode objref
            self.stats[ref][1]: f.inode
            for ref, f in self.snap.files.items()
            if f.kind == "sock"
        }
        if not socks:
            return
        try:
            peers = unix_peers()
        except OSError as e:
            self.snap.notes.append(f"unix socket peers unknown: sock_diag: {e}")
            return
        for ino, inode in socks.items():
            peer = peers.get(ino)
            if peer is None:
                continue
            if peer in socks:
                self.snap.socket_peers[inode] = socks[peer]
            else:
                self.snap.notes.append(
                    f"unix socket inode objref {inode} (socket:[{ino}]): its peer "
                    f"socket:[{peer}] is outside the tree"
                )


# ---- unix socket peers: NETLINK_SOCK_DIAG ------------------------------------


def unix_peers() -> dict[int, int]:
    """Socket inode -> peer socket inode, for every connected unix socket of
    this network namespace (what ``ss -x`` shows as Peer): the unix kind's
    sock_diag dump."""
    return {ino: d.peer for ino, d in sockdiag.diag().items() if d.peer}


# ---- the snapshot -----------------------------------------------------------------


def snapshot(pid: int) -> Snapshot:
    """Read the live tree rooted at pid (not frozen: a snapshot that may race)."""
    if pid == 1:
        raise LsError("refusing to list pid 1 (init: the whole system)")
    try:
        root = root_process(pid)
        procs = Lister(root)
        listed = procs.list()
    except CheckpointError as e:
        raise LsError(str(e)) from None
    snap = Snapshot(root=pid)
    try:
        ctx = Context(autogrow=True)
    except OSError as e:
        raise LsError(f"cannot open the checkpoint device: {e}") from e
    try:
        reader = _Reader(ctx, snap)
        for p in listed:
            reader.task(p.pid, procs.ppid[p.pid])
        reader.shared_tables()
        reader.epolls()
        reader.sockets()
    finally:
        ctx.close()  # the hash lets every file go
    return snap


# ---- output ----------------------------------------------------------------------


def _mode(f: FileView) -> str:
    m = FMode(f.f_mode)
    return {FMode.READ: "r", FMode.WRITE: "w"}.get(m, "rw" if m else "-")


def _holders(hs: list[tuple[int, int]]) -> str:
    by: dict[int, list[int]] = {}
    for pid, fd in hs:
        by.setdefault(pid, []).append(fd)
    return "; ".join(
        f"task {pid} fd {','.join(map(str, fds))}" for pid, fds in by.items()
    )


def summary(snap: Snapshot) -> str:

    lines = [f"tree {snap.root}: {RACE_NOTE}"]
    ends: dict[int, str] = {}  # objref -> what it shares beyond its fds
    for ino, group in snap.pipes().items():
        for f in group:
            others = [o.objref for o in group if o is not f]
            if others:
                refs = ", ".join(map(str, others))
                ends[f.objref] = f"pipe inode {ino} with file {refs}"
    for a, b in snap.socket_pairs():
        for mine, peer in ((a, b), (b, a)):
            for f in snap.by_inode(mine):
                refs = ", ".join(str(o.objref) for o in snap.by_inode(peer))
                ends[f.objref] = f"socket pair, peer file {refs}"
    for t in snap.tasks:
        lines.append("")
        shape = []
        if t.zombie:
            shape.append("zombie")
        if t.threads > 1:
            shape.append(f"{t.threads} threads")
        if t.files_pid:
            shape.append(f"shares the fd table of task {t.files_pid}")
        if t.note:
            shape.append(t.note)
        extra = f" ({'; '.join(shape)})" if shape else ""
        lines.append(f"task {t.pid} ppid {t.ppid} {text(t.comm)}{extra}")
        for fd in t.fds:
            f = snap.files.get(fd.objref)
            cloexec = " cloexec" if fd.cloexec else ""
            if f is None:
                why = fd.problem or "not read"
                lines.append(f"  fd {fd.fd:<3} {text(fd.link)}{cloexec} ({why})")
                continue
            share = []
            others = [h for h in f.holders if h != (t.pid, fd.fd)]
            if others:
                share.append(f"same open file as {_holders(others)}")
            if f.objref in ends:
                share.append(ends[f.objref])
            tail = f" [{'; '.join(share)}]" if share else ""
            lines.append(
                f"  fd {fd.fd:<3} file {f.objref:<4} {f.kind:<8} {_mode(f):<2} "
                f"{o_flags_names(f.f_flags)}{cloexec} {text(fd.link)}{tail}"
            )
    shared = snap.shared_files()
    if shared:
        lines += ["", "open files shared by several fds:"]
        for f in shared:
            lines.append(f"  file {f.objref} {text(f.link)}: {_holders(f.holders)}")
    pipes = snap.pipes()
    if pipes:
        lines += ["", "pipes (inode objref: ends):"]
        for ino, group in pipes.items():
            desc = "; ".join(
                f"{_mode(f)} file {f.objref} ({_holders(f.holders)})" for f in group
            )
            modes = 0
            for f in group:
                modes |= f.f_mode
            missing = [
                who
                for bit, who in ((FMode.READ, "reader"), (FMode.WRITE, "writer"))
                if not modes & bit
            ]
            half = f" (no {' or '.join(missing)} in the tree)" if missing else ""
            lines.append(f"  pipe {ino}: {desc}{half}")
    pairs = snap.socket_pairs()
    if pairs:
        lines += ["", "socket pairs (inode objrefs):"]
        for a, b in pairs:
            sides = [
                ", ".join(
                    f"file {f.objref} ({_holders(f.holders)})" for f in snap.by_inode(x)
                )
                for x in (a, b)
            ]
            lines.append(f"  {a} <-> {b}: {sides[0]} <-> {sides[1]}")
    if snap.epolls:
        lines += ["", "epolls:"]
        for ref, items in snap.epolls.items():
            f = snap.files[ref]
            lines.append(f"  file {ref} ({_holders(f.holders)}): {len(items)} items")
            for i in items:
                target = f"file {i.target}" if i.target else "not open in the tree"
                lines.append(
                    f"    tfd {i.tfd} -> {target} events "
                    f"{epoll_events_names(i.events)} data {i.data:#x}"
                )
    if snap.notes:
        lines += ["", "notes:"]
        lines += [f"  {n}" for n in snap.notes]
    return "\n".join(lines) + "\n"


def to_json(snap: Snapshot) -> dict[str, Any]:
    return snap.to_dict()


def to_dot(snap: Snapshot) -> str:
    """A Graphviz digraph: tasks (boxes) -> open files (fd edges), pipe
    inodes (diamonds) joining their ends, socket pairs (dotted), epoll items
    (dashed), parent -> child (bold)."""

    out = [
        "digraph pyckpt_ls {",
        "  rankdir=LR;",
        '  node [fontname="monospace"];',
        f"  label={dot_quoted(f'tree {snap.root}: live snapshot (may race)')};",
    ]
    pids = {t.pid for t in snap.tasks}
    for t in snap.tasks:
        label = dot_label(f"task {t.pid}", t.comm)
        out.append(f"  task_{t.pid} [shape=box, label={label}];")
    for t in snap.tasks:
        if t.ppid in pids:
            out.append(f"  task_{t.ppid} -> task_{t.pid} [style=bold];")
    for ref, f in snap.files.items():
        shape = "hexagon" if f.kind == "eventpoll" else "ellipse"
        label = dot_label(f"file {ref} {f.kind}", f.link)
        out.append(f"  file_{ref} [shape={shape}, label={label}];")
    for t in snap.tasks:
        for fd in t.fds:
            edge = f"[label={dot_quoted(f'fd {fd.fd}')}]"
            if fd.objref:
                out.append(f"  task_{t.pid} -> file_{fd.objref} {edge};")
            else:  # listed, not read by the module
                node = f"fd_{t.pid}_{fd.fd}"
                label = dot_label(fd.link, fd.problem)
                out.append(f"  {node} [shape=note, label={label}];")
                out.append(f"  task_{t.pid} -> {node} {edge};")
    for ino, group in snap.pipes().items():
        out.append(f"  inode_{ino} [shape=diamond, label={dot_quoted(f'pipe {ino}')}];")
        for f in group:
            out.append(
                f"  file_{f.objref} -> inode_{ino} [label={dot_quoted(_mode(f))}];"
            )
    for a, b in snap.socket_pairs():
        for fa in snap.by_inode(a):
            for fb in snap.by_inode(b):
                out.append(
                    f"  file_{fa.objref} -> file_{fb.objref} "
                    '[dir=both, style=dotted, label="peer"];'
                )
    for ref, items in snap.epolls.items():
        for i in items:
            if i.target:
                label = dot_quoted(f"tfd {i.tfd} {epoll_events_names(i.events)}")
                out.append(
                    f"  file_{ref} -> file_{i.target} [style=dashed, label={label}];"
                )
    out.append("}")
    return "\n".join(out) + "\n"
