"""Checkpoint a live process tree into an in-memory Image.

The steps of DESIGN.md's "Coordination": discover the tree with psutil,
freeze it (SIGSTOP or the cgroup v2 freezer), let the module walk each
task's fd table and deduplicate the files by ``struct file`` (one ioctl,
``CKPT_IOC_TASK_FDS``, as linux-cr collected in the kernel), copy out
(``pidfd_getfd``) only the files a kind must read itself, save pipe buffers
without consuming them (``tee``), resolve epoll targets (fdinfo +
``kcmp(KCMP_EPOLL_TFD)``), ask the module which objects are
also held outside the tree (``CKPT_IOC_CONTAINED``), then thaw.  The image is
returned, not written: a caller writes it after the thaw.

Every failure raises CheckpointError with the tree resumed as it was found.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno as _errno
import functools
import os
import re
import resource
import signal
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import psutil

from pyckpt import freeze, gcpause, kinds, proc, proctree, syscalls
from pyckpt.abi import FileKind, ObjType
from pyckpt.device import Context, FileInfo, TaskFd
from pyckpt.errors import CheckpointError, CkptError
from pyckpt.image import Image
from pyckpt.model import (
    RLIM_INFINITY,
    RLIM_NLIMITS,
    ErrorRecord,
    Fd,
    File,
    Head,
    Task,
    fd_table,
)
from pyckpt.proc import read_text as _read_text
from pyckpt.proc import starttime as _starttime
from pyckpt.syscalls import kcmp_files, pidfd_getfd

__all__ = ["CheckpointError", "CheckpointResult", "checkpoint"]


_EPOLL_ITEM = re.compile(
    r"tfd:\s*(-?\d+)\s+events:\s*([0-9a-fA-F]+)\s+data:\s*([0-9a-fA-F]+)"
    r"\s+pos:\s*(-?\d+)\s+ino:\s*([0-9a-fA-F]+)\s+sdev:\s*([0-9a-fA-F]+)"
)


@dataclass
class CheckpointResult:
    image: Image
    downtime: float  # seconds the tree was frozen
    collect_time: float  # seconds for the whole checkpoint() call
    nr_tasks: int
    nr_fds: int
    nr_files: int  # distinct open file descriptions


# ---- /proc helpers -------------------------------------------------------------


# ---- the tree ----------------------------------------------------------------------


# ---- freezers --------------------------------------------------------------------


# ---- collection ----------------------------------------------------------------------


class _FdRef:
    """One fd of one task, while it is collected.  The module's walk gave its
    number, objref, close-on-exec flag and (first time met) the file's
    record; the rest is read only when a kind asks: most fds, met before,
    never need it, and each read costs a syscall while the tree is frozen."""

    __slots__ = (
        "_col",
        "_fdinfo",
        "_link",
        "_local",
        "comm",
        "fd",
        "info",
        "objref",
        "pid",
        "pipe",
    )

    def __init__(self, col: _Collector, pid: int, comm: str, w: TaskFd) -> None:
        self._col = col
        self.pid, self.comm, self.fd, self.objref = pid, comm, w.fd, w.objref
        self.info = w.file  # the first holder's only
        if w.busy:  # reading it (/proc, tee) would wait on the same lock
            raise CheckpointError(
                f"task {pid} ({comm}) fd {w.fd}: a task of the tree is stalled "
                "inside a read, write or epoll_wait on it, holding its lock; "
                "let it finish (thaw the tree) and checkpoint again"
            )
        # what the module's walk already told (CKPT_TASK_FDS_DETAIL)
        self._fdinfo = w.fdinfo
        self._link = w.link
        self.pipe = w.pipe
        self._local: int | None = None

    @property
    def link(self) -> str:
        """readlink of /proc/PID/fd/FD (the module's, if it gave it)."""
        if self._link is None:
            self._link = os.readlink(f"/proc/{self.pid}/fd/{self.fd}")
        return self._link

    @property
    def fdinfo(self) -> str:
        """/proc/PID/fdinfo/FD (for the kinds that read one, the module gave
        the file's own lines if they fit)."""
        if self._fdinfo is None:
            self._fdinfo = _read_text(f"/proc/{self.pid}/fdinfo/{self.fd}")
        return self._fdinfo

    @property
    def local(self) -> int:
        """Our own copy of the fd (pidfd_getfd), for a kind that must read
        the file itself (tee a pipe, ask a socket); -1 once closed."""
        if self._local is None:
            self._local = self._col.getfd(self)
            self._col.copied.append(self)
        return self._local

    @property
    def stat(self) -> FileInfo | os.stat_result:
        """What fstat(2) says of the file (st_mode, st_ino, st_dev, st_nlink,
        st_uid, st_gid, st_size, st_rdev): the module's walk's for a first
        holder (no copy of the fd, nothing made), else fstat of our copy."""
        if self.info is not None:
            return self.info
        return os.fstat(self.local)

    def where(self) -> str:
        return f"task {self.pid} ({self.comm}) fd {self.fd}"


@dataclass
class Options:
    """What a checkpoint may save beyond the defaults (CLI flags)."""

    allow_external: bool = False  # objects also held outside, marked external
    # bytes of a memfd or deleted file saved into the image, at most
    contents_limit: int = 1 << 20
    # character devices saved as stateless, reopened by path (kinds/chrdev.py)
    devices: list[str] = field(default_factory=list)
    # bytes read from the tree in all (pipe buffers, socket queues, file
    # contents), at most: counted as they are read (_Collector.take)
    max_image_bytes: int = 1 << 30


@dataclass
class _Collector:
    """What checkpoint has gathered so far; each kind (pyckpt/kinds/) reads
    and fills it through first/info/image, problem() and own()."""

    ctx: Context
    image: Image
    opts: Options = field(default_factory=Options)
    first: dict[int, _FdRef] = field(default_factory=dict)  # objref -> first fd
    info: dict[int, FileInfo] = field(default_factory=dict)
    # each task's walk: refs and holders are made of it when first asked
    walked: list[tuple[int, str, list[TaskFd]]] = field(default_factory=list)
    _refs: list[_FdRef] | None = field(default=None, repr=False)
    _holders: dict[int, list[_FdRef]] | None = field(default=None, repr=False)
    problems: list[str] = field(default_factory=list)
    locals: set[int] = field(default_factory=set)  # every fd we opened
    copied: list[_FdRef] = field(default_factory=list)  # the refs with a copy
    pidfds: dict[int, int] = field(default_factory=dict)  # pid -> its pidfd
    paths: dict[str, os.stat_result | None] = field(default_factory=dict)
    nr_fds: int = 0
    read_bytes: int = 0  # data read from the tree so far (take())
    by_kind: dict[FileKind, list[File]] = field(default_factory=dict)  # files()'
    # this process's namespaces and root, each task's are compared with
    mine: _Mine = field(default_factory=lambda: _Mine.now())

    @property
    def refs(self) -> list[_FdRef]:
        """Every fd of the tree, in walk order.  Made on first use: a tree
        without leaks, epolls or terminals needs only each file's first
        holder, and an object per fd costs while the tree is frozen."""
        if self._refs is None:
            self._refs = [
                self.first[w.objref] if w.first else _FdRef(self, pid, comm, w)
                for pid, comm, walk in self.walked
                for w in walk
            ]
        return self._refs

    @property
    def holders(self) -> dict[int, list[_FdRef]]:
        """objref -> every fd holding the file, in walk order."""
        if self._holders is None:
            self._holders = {}
            for r in self.refs:
                self._holders.setdefault(r.objref, []).append(r)
        return self._holders

    def _own(self, fd: int) -> int:
        self.locals.add(fd)
        return fd

    def own(self, fd: int) -> int:
        """A scratch fd of a kind's: closed with the others on every path."""
        return self._own(fd)

    def problem(self, r: _FdRef, why: str) -> None:
        """r cannot be checkpointed: one line of the refusal."""
        self.problems.append(f"{r.where()}: {why}")

    def take(self, r: _FdRef, n: int, what: str) -> None:
        """n more bytes of r's data are about to be read (or were, for a
        socket queue): CheckpointError, naming r, once the tree's data read
        in all would pass Options.max_image_bytes (the tree is then thawed
        as on any refusal)."""
        self.read_bytes += n
        top = self.opts.max_image_bytes
        if self.read_bytes > top:
            raise CheckpointError(
                f"{r.where()}: {r.link}: {what}: {self.read_bytes} bytes read "
                f"from the tree, above the limit of {top} (--max-image-bytes / "
                "Options.max_image_bytes raise it)",
                errno=_errno.E2BIG,
            )

    def _close(self, fd: int) -> None:
        self.locals.discard(fd)
        os.close(fd)

    def stat_path(self, path: str) -> os.stat_result | None:
        """os.stat(path) (None if it fails), once per path: the tree is
        frozen, and a file opened 1,000 times is one stat, not 1,000."""
        if path not in self.paths:
            try:
                self.paths[path] = os.stat(path)
            except OSError:
                self.paths[path] = None
        return self.paths[path]

    def getfd(self, r: _FdRef) -> int:
        """A copy of r's fd (pidfd_getfd), closed with the others."""
        pidfd = self.pidfds.get(r.pid, -1)
        if pidfd < 0:
            raise CheckpointError(f"{r.where()}: collected already, no copy possible")
        try:
            return self._own(pidfd_getfd(pidfd, r.fd))
        except OSError as e:
            hint = " (raise ulimit -n)" if e.errno == _errno.EMFILE else ""
            raise CheckpointError(
                f"{r.where()}: cannot copy it: {proctree.why(e)}{hint}"
            ) from e

    def prefetch(self, refs: Iterable[_FdRef]) -> None:
        """Copies of many fds at once, for a kind about to read them all:
        the module fetches each file from the hash (it is there since the
        walk) in one batch ioctl, instead of one pidfd_getfd() each."""
        need = [r for r in refs if r._local is None]
        if not need:
            return
        try:
            fds = self.ctx.fetch_many([r.objref for r in need])
        except CkptError as e:
            for fd in e.results or ():
                self._own(fd)
            hint = " (raise ulimit -n)" if e.errno == _errno.EMFILE else ""
            raise CheckpointError(f"cannot copy {len(need)} files: {e}{hint}") from e
        for r, fd in zip(need, fds, strict=True):
            r._local = self._own(fd)
        self.copied += need

    def close_locals(self) -> None:
        # fetched copies come in runs of adjacent numbers: one close_range()
        # per run, each number in it ours
        run: list[int] = []
        for fd in sorted(self.locals):
            if run and fd != run[-1] + 1:
                os.closerange(run[0], run[-1] + 1)
                run = []
            run.append(fd)
        if run:
            os.closerange(run[0], run[-1] + 1)
        self.locals = set()
        self.pidfds = {}
        for r in self.copied:
            r._local = -1
        self.copied = []

    # -- tasks and their fds --

    def zombie(self, pid: int, ppid: int, status: int) -> None:
        """An exited task its parent has not reaped: its ids and exit status
        (it has no fds, memory, cwd or namespaces left to read)."""
        comm = proctree.comm(pid)
        try:
            task = Task(
                pid=pid,
                ppid=ppid,
                sid=os.getsid(pid),
                pgid=os.getpgid(pid),
                comm=comm,
                argv=[],
                cwd="",
                exit_status=status,
            )
            _zombie_identity(task)
        except (OSError, ValueError, TypeError) as e:
            raise CheckpointError(
                f"task {pid} ({comm}), a zombie: {proctree.why(e)}"
            ) from e
        self.image.tasks.append(task)

    def task(self, p: psutil.Process, ppid: int) -> None:
        """A task and its fds; one lookup batch per task."""
        pid = p.pid
        comm = proctree.comm(pid)
        try:
            cmdline = _read_text_bytes(f"/proc/{pid}/cmdline")
            task = Task(
                pid=pid,
                ppid=ppid,
                sid=os.getsid(pid),
                pgid=os.getpgid(pid),
                comm=comm,
                argv=[os.fsdecode(a) for a in cmdline.split(b"\0")[:-1]],
                cwd=os.readlink(f"/proc/{pid}/cwd"),
            )
            for problem in (_identity(task, self.mine), proctree.threads(task)):
                if problem:
                    self.problems.append(f"task {pid} ({comm}): {problem}")
            # ties the pid to the task listed and frozen: the module refuses
            # a task started at another time (a reused pid)
            started = _starttime(pid)
            if not p.is_running():
                raise psutil.NoSuchProcess(pid)
            self.pidfds[pid] = self._own(os.pidfd_open(pid))
        except (OSError, psutil.Error) as e:
            raise CheckpointError(f"task {pid} ({comm}): {proctree.why(e)}") from e
        try:
            # /proc does not show them; restart gives them back
            task.securebits = self.ctx.task_creds(pid, started).securebits
        except CkptError as e:
            raise CheckpointError(
                f"task {pid} ({comm}): the module could not read its securebits: {e}"
            ) from e
        try:
            walked = self.ctx.task_fds(pid, started)
        except CkptError as e:
            raise CheckpointError(
                f"task {pid} ({comm}): the module could not collect its files: {e}"
            ) from e
        first, info = self.first, self.info
        for w in walked:
            if w.first:
                first[w.objref] = _FdRef(self, pid, comm, w)
                info[w.objref] = w.file
        self.walked.append((pid, comm, walked))  # task.fds: fd_tables()
        self._refs = self._holders = None  # made again when asked
        self.image.tasks.append(task)
        self.nr_fds += len(walked)

    def fd_tables(self) -> None:
        """Each task's FD list, made of its walk once the tree runs again
        (or just before a kill's save): it reads no live state, and an
        object per fd costs while the tree is frozen."""
        tasks = {t.pid: t for t in self.image.tasks}
        for pid, comm, walk in self.walked:
            tasks[pid].fds = [Fd(w.fd, w.objref, w.cloexec) for w in walk]

    # -- files --

    def files(self) -> None:
        files, by_kind = self.image.files, self.by_kind
        for objref, r in self.first.items():
            f = self._file(objref, r)
            if f is not None:
                files[objref] = f
                by_kind.setdefault(f.kind, []).append(f)

    def of_kind(self, *kinds: FileKind) -> list[File]:
        """The tree's files of these kinds, each kind's in walk order: a
        kind's collect() looks at its own files, not at every file."""
        return [f for k in kinds for f in self.by_kind.get(k, ())]

    def _file(self, objref: int, r: _FdRef) -> File | None:
        info = r.info
        assert info is not None  # a first holder's
        f = File(
            objref=objref,
            kind=info.kind,
            f_flags=info.f_flags,
            f_mode=info.f_mode,
            pos=info.pos,
        )
        kind = kinds.claim(info.kind, r)
        if kind is None:
            self.problem(r, f"{_describe(r, info.kind, r.stat)}: not supported")
            return None
        return f if kind.checkpoint(self, f, r) else None

    # -- leaks --

    def leaks(self, allow_external: bool) -> None:
        """CKPT_IOC_CONTAINED; call it with every local copy closed."""
        if not self.nr_fds:
            return  # no fd in the tree; the module refuses an unused context
        try:
            leaks = self.ctx.contained()
        except CkptError as e:
            raise CheckpointError(f"leak detection failed: {e}") from e
        lines = []
        for leak in leaks:
            f = self.image.files.get(leak.objref)
            owner = kinds.by_file_kind(f.kind) if f is not None else None
            if leak.type == ObjType.FILE and owner and owner.shared_outside:
                f.external = True  # a terminal, /dev/null: made anew anyway
                continue
            if leak.type == ObjType.INODE:
                objrefs = [
                    o
                    for o, f in self.image.files.items()
                    if f.pipe_objref == leak.objref
                ]
                refs = [r for o in objrefs for r in self.holders[o]]
                name = f"pipe:[objref {leak.objref}]"
                if refs:
                    name += f" ({refs[0].link})"
                what = "an end of the pipe is open outside the tree"
            else:
                objrefs = [leak.objref]
                refs = self.holders.get(leak.objref, [])
                f = self.image.files.get(leak.objref)
                name = (f.path if f and f.path else "") or (
                    refs[0].link if refs else f"objref {leak.objref}"
                )
                what = (
                    "the open file is also held outside the tree (an fd, or in flight)"
                )
            held = ", ".join(f"task {r.pid} ({r.comm}) fd {r.fd}" for r in refs)
            line = (
                f"{name} in {held or 'the tree'}: {what}: held {leak.refs} times, "
                f"the tree accounts for {leak.users}"
            )
            lines.append(line)
            if allow_external:
                for o in objrefs:
                    if o in self.image.files:
                        self.image.files[o].external = True
                self.image.errors.append(
                    ErrorRecord(
                        err=0,
                        msg=f"external: {line}",
                        objref=leak.objref,
                        pid=refs[0].pid if refs else 0,
                        fd=refs[0].fd if refs else -1,
                    )
                )
        if lines and not allow_external:
            raise CheckpointError(
                f"{len(lines)} object(s) of the tree are also held outside it "
                "(EBUSY; allow_external=True saves them marked external):",
                lines,
                errno=_errno.EBUSY,
            )

    def shared_tables(self) -> None:
        """Tasks sharing one fd table (clone(CLONE_FILES) without
        CLONE_THREAD): each names the first of its group in files_pid.  Only
        tasks listing the same fds can share, so only tasks alike in count,
        first and last fd are asked (a whole table as the key costs a tuple
        per fd while frozen); kcmp(KCMP_FILES) decides, and orders the
        tables, so each such group is sorted, not compared pairwise."""
        pos = {t.pid: i for i, t in enumerate(self.image.tasks)}
        tasks = {t.pid: t for t in self.image.tasks}
        walks = {pid: walk for pid, comm, walk in self.walked}  # live tasks'
        groups: dict[tuple[int, ...], list[Task]] = {}
        for pid, w in walks.items():
            key = (len(w), w[0].fd, w[0].objref, w[-1].fd, w[-1].objref) if w else (0,)
            groups.setdefault(key, []).append(tasks[pid])
        for same in groups.values():
            if len(same) < 2:
                continue
            try:
                order = sorted(
                    same,
                    key=functools.cmp_to_key(lambda a, b: kcmp_files(a.pid, b.pid)),
                )
                # the sorted list holds each table's tasks next to each other
                runs: list[list[Task]] = []
                for t in order:
                    if runs and kcmp_files(runs[-1][0].pid, t.pid) == 0:
                        runs[-1].append(t)
                    else:
                        runs.append([t])
            except OSError as e:
                raise CheckpointError(
                    f"tasks {[t.pid for t in same]}: kcmp(KCMP_FILES): {proctree.why(e)}"
                ) from e
            for run in runs:
                first = min(run, key=lambda x: pos[x.pid])
                for x in run:
                    if x is first:
                        continue
                    # one table walked twice while frozen lists the same
                    # fds (the image's reader refuses it otherwise)
                    if fd_table(walks[x.pid]) != fd_table(walks[first.pid]):
                        raise CheckpointError(
                            f"tasks {first.pid} and {x.pid} share an fd table "
                            "but their walks differ"
                        )
                    x.files_pid = first.pid


def _ids(task: Task, status: str) -> None:
    """uids, gids and supplementary groups from /proc/PID/status."""
    task.ruid, task.euid, task.suid, task.fsuid = map(
        int, proctree.status_line(status, "Uid")
    )
    task.rgid, task.egid, task.sgid, task.fsgid = map(
        int, proctree.status_line(status, "Gid")
    )
    task.groups = [int(g) for g in proctree.status_line(status, "Groups")]


def _zombie_identity(task: Task) -> None:
    """A zombie's ids from /proc/PID/status (what its parent's waitid()
    reports as si_uid); no limits, environment or executable are left."""
    _ids(task, _read_text(f"/proc/{task.pid}/status"))


_NS = ("mnt", "pid", "user")


@dataclass(frozen=True)
class _Mine:
    """The namespaces and root of this process: taken once per checkpoint
    (a stat of a directory costs ~0.5 ms on the guest's 9p root)."""

    ns: tuple[int, ...]
    root: tuple[int, int]

    @classmethod
    def now(cls) -> _Mine:
        st = os.stat("/")
        ns = tuple(os.stat(f"/proc/self/ns/{n}").st_ino for n in _NS)
        return cls(ns, (st.st_dev, st.st_ino))


def _identity(task: Task, mine: _Mine) -> str:
    """Fill the task's credentials, limits, environment and executable from
    /proc; a problem that makes it unrestartable as a string, else ''."""
    pid = task.pid
    status = _read_text(f"/proc/{pid}/status")

    def line(key: str) -> list[str]:
        return proctree.status_line(status, key)

    _ids(task, status)
    umask = line("Umask")
    task.umask = int(umask[0], 8) if umask else 0o022
    task.no_new_privs = line("NoNewPrivs") == ["1"]
    caps = [line(k) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")]
    if not all(caps):
        return "its capability sets cannot be read from /proc"
    (
        task.cap_inheritable,
        task.cap_permitted,
        task.cap_effective,
        task.cap_bset,
        task.cap_ambient,
    ) = (int(c[0], 16) for c in caps)
    seccomp = line("Seccomp")
    if seccomp == ["1"]:
        return "it runs in seccomp strict mode: it cannot exec again"
    if seccomp == ["2"]:
        problem = _seccomp(task, line("TracerPid"))
        if problem:
            return problem
    task.at_secure = proc.at_secure(pid)
    task.label = proc.label(pid)
    limits = []
    for r in range(RLIM_NLIMITS):
        soft, hard = resource.prlimit(pid, r)
        limits.append(
            (
                RLIM_INFINITY if soft == resource.RLIM_INFINITY else soft,
                RLIM_INFINITY if hard == resource.RLIM_INFINITY else hard,
            )
        )
    task.rlimits = limits
    env = _read_text_bytes(f"/proc/{pid}/environ")
    task.env = [os.fsdecode(e) for e in env.split(b"\0")[:-1]]
    try:
        task.exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        task.exe = ""  # a kernel thread has none (refused elsewhere)
    if task.exe.endswith(" (deleted)"):
        return f"its executable {task.exe} was deleted"
    for ns, ours in zip(_NS, mine.ns, strict=True):
        if os.stat(f"/proc/{pid}/ns/{ns}").st_ino != ours:
            return (
                f"it runs in another {ns} namespace: restart recreates none, "
                "so it is not checkpointed"
            )
    cwd = os.stat(f"/proc/{pid}/cwd")  # restart checks it is the same
    task.cwd_dev, task.cwd_ino, task.cwd_mode = cwd.st_dev, cwd.st_ino, cwd.st_mode
    task.cwd_uid, task.cwd_gid = cwd.st_uid, cwd.st_gid
    root = os.stat(f"/proc/{pid}/root")
    if (root.st_dev, root.st_ino) != mine.root:
        where = os.readlink(f"/proc/{pid}/root")
        return f"it is chrooted into {where}: chrooted tasks are not supported"
    return ""


def _seccomp(task: Task, tracer: list[str]) -> str:
    """The seccomp filters of a frozen task, read as CRIU reads them
    (syscalls.seccomp_filters: ptrace seize, interrupt, get each filter,
    detach, the task left stopped or frozen as it was); restart installs
    them last before the exec.  A filter that cannot be read refuses the
    task: restart would lift it."""
    if tracer and tracer != ["0"]:
        return (
            f"it is traced by {tracer[0]}, so its seccomp filters cannot be "
            "read (restart would lift them: refused)"
        )
    try:
        task.seccomp = syscalls.seccomp_filters(task.pid)
    except OSError as e:
        return f"its seccomp filters cannot be read: {e.strerror}"
    if not task.seccomp:
        return "its status says seccomp filters, but none could be read"
    return ""


def _read_text_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _describe(r: _FdRef, kind: FileKind, st: FileInfo | os.stat_result) -> str:
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        what = "character" if stat.S_ISCHR(st.st_mode) else "block"
        rdev = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        return f"{r.link} ({what} device {rdev})"
    return r.link


# ---- the whole checkpoint ----------------------------------------------------------


def _collect(frz: freeze.Freezer, col: _Collector) -> None:
    procs = frz.procs
    for p in procs:
        if p.pid in frz.zombies:
            col.zombie(p.pid, frz.lister.ppid[p.pid], frz.zombies[p.pid])
        else:
            col.task(p, frz.lister.ppid[p.pid])
    col.shared_tables()
    col.files()
    for kind in kinds.KINDS:
        kind.collect(col)
    # a local copy counts as an outside reference: none may be open now
    col.close_locals()
    if col.problems:
        raise CheckpointError(
            f"tree {procs[0].pid} holds {len(col.problems)} file(s) that cannot "
            "be checkpointed:",
            col.problems,
        )


@contextlib.contextmanager
def _nofile_at_hard_limit() -> Iterator[None]:
    """Raise RLIMIT_NOFILE for a while: to fs.nr_open where we may (root),
    else the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            top = max(int(f.read()), hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, top))
    except (OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@gcpause.paused()  # while frozen, and while the image is encoded and written
def checkpoint(
    pid: int,
    *,
    freezer: str = "auto",
    allow_external: bool = False,
    kill: bool = False,
    save: Callable[[Image], None] | None = None,
    options: Options | None = None,
) -> CheckpointResult:
    """Checkpoint the process tree rooted at pid into an in-memory Image.

    freezer: "cgroup" (the cgroup v2 freezer), "signal" (SIGSTOP/SIGCONT)
    or "auto" (cgroup where usable, else signal); with any, a task that ran
    while the tree was collected (its owner's SIGCONT) refuses the
    checkpoint.
    allow_external: save objects also held outside the tree, marked external,
    instead of failing.  kill: SIGKILL the tree instead of thawing it (only
    once the checkpoint succeeded, and once save() returned: a save that
    fails thaws the tree instead).  save: called with the image while the
    tree is still frozen, when kill is set; else after the thaw.  options:
    what the kinds may save beyond the defaults (allow_external sets its
    field too).

    Raises CheckpointError with the tree resumed as it was (SIGINT,
    SIGTERM and SIGHUP while frozen thaw it first; a watchdog process thaws
    it if the caller is killed outright); ValueError for an unknown freezer.
    """
    freezer_class = freeze.freezer_class(freezer)  # ValueError first
    start = time.monotonic()
    root = proctree.root_process(pid)
    ours = proctree.ours()
    proctree.check_not_ours(proctree.Lister(root).list(), ours)
    watchdog = freeze.Watchdog()
    watchdog.start()  # before the context: it inherits no copy of it
    try:
        ctx = Context(autogrow=True)
    except OSError as e:
        watchdog.done()
        raise CheckpointError(f"cannot open the checkpoint device: {e}") from e
    try:
        frz = freezer_class(root, ours, watchdog)
    except BaseException:
        ctx.close()
        watchdog.done()
        raise
    uts = os.uname()
    head = Head(
        time=0.0,
        sysname=uts.sysname,
        release=uts.release,
        version=uts.version,
        machine=uts.machine,
    )
    image = Image(head=head)
    opts = dataclasses.replace(
        options or Options(),
        allow_external=allow_external or (options or Options()).allow_external,
    )
    col = _Collector(ctx, image, opts)
    frozen_at = time.monotonic()
    head.time = time.time()
    with freeze.thaw_on_signals() as block:
        try:
            # a copy of each distinct file stays open until the leak check
            with _nofile_at_hard_limit():
                frz.freeze()
                _collect(frz, col)
                col.leaks(opts.allow_external)
                # nothing collected holds if a task ran meanwhile
                frz.verify()
        except BaseException as exc:
            block()
            col.close_locals()
            ctx.close()
            ran = ""
            if isinstance(exc, (OSError, psutil.Error, CheckpointError)):
                ran = frz.ran()  # a task that ran may be why the collection failed
            try:
                frz.thaw()
                watchdog.done()
            except (OSError, psutil.Error, CheckpointError) as thaw_exc:
                # the first error matters more; the watchdog tries again
                watchdog.done(undone=False)
                exc.add_note(f"and the tree could not be thawed: {thaw_exc}")
            if ran and ran not in str(exc):
                raise CheckpointError(ran) from exc
            if isinstance(exc, freeze.Signalled):
                if exc.sig == signal.SIGINT:
                    raise KeyboardInterrupt from None
                name = signal.Signals(exc.sig).name
                raise CheckpointError(
                    f"checkpoint of tree {pid} interrupted by {name}: the tree "
                    "was thawed",
                    errno=_errno.EINTR,
                ) from None
            if isinstance(exc, (OSError, psutil.Error)):
                raise CheckpointError(
                    f"checkpoint of tree {pid} failed: {exc}"
                ) from exc
            raise
        block()  # from here on nothing interrupts the thaw or kill
        # the hash pins every file: dropped before the tree runs again
        ctx.close()
        saved = False
        try:
            if kill and save is not None:
                col.fd_tables()
                try:
                    save(image)
                except BaseException as e:
                    frz.thaw()
                    watchdog.done()
                    raise CheckpointError(
                        f"tree {pid}: the image could not be written ({e}): the "
                        "tree was thawed, not killed",
                        errno=getattr(e, "errno", 0) or 0,
                    ) from e
                saved = True
            if kill:
                frz.kill()
            else:
                frz.thaw()
            # the tree runs (or is gone) from here: what follows is ours
            # alone (the watchdog's end, the collection the GC put off)
            downtime = time.monotonic() - frozen_at
            watchdog.done()
        except (OSError, psutil.Error) as e:
            watchdog.done(undone=False)
            what = "kill" if kill else "thaw"
            raise CheckpointError(f"tree {pid}: could not {what} it: {e}") from e
    if not saved:
        col.fd_tables()
        if save is not None:
            save(image)
    return CheckpointResult(
        image=image,
        downtime=downtime,
        collect_time=time.monotonic() - start,
        nr_tasks=len(image.tasks),
        nr_fds=col.nr_fds,
        nr_files=len(image.files),
    )
