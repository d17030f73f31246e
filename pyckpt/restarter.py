"""Restart: recreate an image's objects and tasks, hold them at a barrier, release.

The steps follow linux-cr's restart with the module's objhash in the middle:

1. open a context (the policy decides when the hash lets its objects go);
2. create every file once and insert it under its objref; the coordinator then
   closes its own fds, so that only the hash holds the objects;
3. fork stub processes that mirror the recorded tree; each one fetches its
   files from the hash, puts them at their recorded numbers, closes all else,
   takes its recorded credentials (groups, gids, uids, umask, limits),
   reports, and waits at the barrier (SIGUSR1) holding nothing but its
   recorded fds; PR_SET_PDEATHSIG kills it if its parent (the coordinator,
   or the stub above it) dies first, so a coordinator's death takes every
   stub with it;
4. add the epoll items (a helper process fetches the epoll files and their
   targets: linux-cr deferred this until every file existed);
5. release: CKPT_IOC_RELEASE (clear/free per policy), then SIGUSR1 to every
   stub, which clears its PDEATHSIG and execs its recorded executable with
   its recorded argv and environment and the restored fd table.

Files reopened by path are checked first: opened O_PATH|O_NOFOLLOW, their
type, owner, device and inode compared with the image (``relocate`` lets the
device and inode differ), and only then opened for real, non-blocking.

Root's power only lowers privilege (issue 19).  Every object a kind makes
through a path (a reopened file, directory, FIFO or device, a deleted file
made again, a unix socket's name) or whose kernel state records its maker
(sockets: SO_PEERCRED, the SCM_CREDENTIALS of re-queued messages; a memfd's
owner) is made in a helper process that has taken the credentials of the
task holding it (``Objects.as_holder``, ``_run_helper``): the first task in
image order with an fd on it (``_Plan.holder``), so a file held by tasks of
different users is made with the first holder's rights, and a set of unix
sockets made together (a pair, a listener and its connections) with the
rights of its first socket's holder.  The helper hands its fds back over
SCM_RIGHTS.  A task that ran as root (euid 0) has its objects made in the
coordinator, as before.  What stays in the coordinator, as root: pipes,
eventfds, epolls, timerfds, signalfds (no path, no maker recorded) and the
terminal's stdio replacement (the restarter's own fds, /dev/null or the
--stdio file root named).  Each stub enters its cwd after taking its
credentials (``_enter_cwd``).

Memory and registers are not restored: a restarted task starts a program
again (argv, or its recorded one) with its kernel-object state restored.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import functools
import json
import os
import resource
import select
import shutil
import signal
import socket
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Self

from pyckpt import gcpause, kinds, proc, syscalls
from pyckpt.abi import FileKind, Policy
from pyckpt.device import Context
from pyckpt.errors import CkptError, RestartError
from pyckpt.image import Image
from pyckpt.kinds.base import Objects
from pyckpt.limits import Limits
from pyckpt.model import RLIM_INFINITY, File, Task
from pyckpt.stub import (
    MSG_MAX,
    Creds,
    child_init,
    close_all_except,
    make_room,
    move_above,
    restore_limit,
    say,
    unique,
)

__all__ = ["Limits", "RestartError", "Restarted", "restart"]

_EXEC_FAILED = 127
_STUB_FAILED = 126
_DEFAULT_LIMITS = Limits()  # frozen: one shared default


# The coordinator's own fds are all close-on-exec (os.open, pipe2, eventfd and
# epoll with *_CLOEXEC): the kernel keeps O_CLOEXEC out of f_flags, so the
# restored files' flags do not change with it; the stubs set each fd's own.


# ---- checks before anything is created ----------------------------------------


@dataclass
class RestartOptions:
    """How restart maps what the image cannot carry (CLI flags)."""

    # what the tree's terminal becomes: "inherit" (the restarter's own fds
    # 0-2), "null", a regular file's path, or "auto" (inherit for the
    # restarting user's own tasks, null for another user's: kinds/tty.py)
    stdio: str = "auto"
    # character devices named with --device at checkpoint that restart may
    # reopen (kinds/chrdev.py): named again by the restarting user
    devices: list[str] = field(default_factory=list)


@dataclass
class _Plan:
    image: Image
    tasks: list[Task]
    children: dict[int, list[Task]]
    argv: dict[int, list[str]]
    nofile: int  # the fd numbers a stub can hold
    opts: RestartOptions = field(default_factory=RestartOptions)
    relocate: bool = False
    argv_given: bool = False
    coordinator: int = 0  # the pid that forks the root stub
    warnings: list[str] = field(default_factory=list)
    # (recorded pid, fd) -> objref that fd gets instead of its FD record's
    fd_objref: dict[tuple[int, int], int] = field(default_factory=dict)
    # each kind's files, in image order
    files: dict[kinds.Kind, list[File]] = field(default_factory=dict)
    # a kind's own plan, under its name (kinds.base.Plan)
    extra: dict[str, Any] = field(default_factory=dict)
    # -- CMD: its executable, found on the restarter's PATH (not the task's)
    exe_given: str = ""
    # recorded pid -> the task whose ids its stub takes: the parent's, for
    # a task whose exec was privileged (it is exec'd again as it was
    # started, the kernel applying the setuid bit anew)
    ids: dict[int, Task] = field(default_factory=dict)
    # objref -> (task, fd) of its first holder: made when first asked
    holders: dict[int, tuple[Task, int]] | None = field(default=None, repr=False)

    def replace_fd(self, pid: int, fd: int, objref: int) -> None:
        self.fd_objref[(pid, fd)] = objref
        self.holders = None  # asked again: made again

    def objref_of(self, task: Task, fd: int, objref: int) -> int:
        return self.fd_objref.get((task.pid, fd), objref)

    def _first_fds(self) -> dict[int, tuple[Task, int]]:
        # objref -> (task, fd) of its first holder in image order; made on
        # the first question (the kinds' check() may have replaced fds)
        if self.holders is None:
            self.holders = {}
            for t in self.tasks:
                for fd in sorted(t.fds, key=lambda d: d.fd):
                    for ref in (fd.objref, self.objref_of(t, fd.fd, fd.objref)):
                        self.holders.setdefault(ref, (t, fd.fd))
        return self.holders

    def holder(self, objref: int) -> Task:
        got = self._first_fds().get(objref)
        task = self.tasks[0] if got is None else got[0]
        # a privileged exec's task: its objects are made with the ids its
        # stub takes (its parent's), not with those the exec gave it
        return self.ids.get(task.pid, task)

    def where(self, objref: int) -> str:
        got = self._first_fds().get(objref)
        if got is None:
            return f"objref {objref}"
        return f"task {got[0].pid} fd {got[1]}"


def _check_limits(image: Image, limits: Limits) -> None:
    nfds = sum(len(t.fds) for t in image.tasks)
    checks = [
        ("tasks", len(image.tasks), limits.tasks, "--max-tasks"),
        ("fds", nfds, limits.fds, "--max-fds"),
    ]
    # the data a kind saved, against the limit it names (pipe bytes, ...)
    for k in kinds.KINDS:
        if k.limit is not None:
            name, what = k.limit
            flag = "--max-" + name.replace("_", "-")
            checks.append((what, k.data_bytes(image), getattr(limits, name), flag))
    for what, n, top, flag in checks:
        if n > top:
            raise RestartError(
                f"image has {n} {what}, above the limit of {top} ({flag} / "
                "Limits raise it)",
                _errno.E2BIG,
            )


# signals whose default action ends the process: a zombie killed by another
# one cannot be (a handler or SIG_IGN would have caught it)
_FATAL = frozenset(range(1, 65)) - {
    0,
    32,  # glibc's own
    33,
    signal.SIGCHLD,
    signal.SIGCONT,
    signal.SIGSTOP,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGURG,
    signal.SIGWINCH,
}


def _check_zombie(t: Task, i: int, notes: list[str]) -> None:
    """A zombie is remade as a child that exits with its status: one a
    process can end with."""
    st = t.exit_status or 0
    if i == 0:
        raise RestartError(f"task {t.pid}: the tree's root is a zombie")
    if t.fds or t.files_pid:
        raise RestartError(f"task {t.pid}: a zombie with an fd table")
    sig = st & 0x7F
    if not 0 <= st <= 0xFFFF or (sig == 0 and st & 0xFF) or (sig and st >> 8):
        raise RestartError(f"task {t.pid}: exit status {st:#x} is no exit status")
    if sig and sig not in _FATAL:
        raise RestartError(
            f"task {t.pid}: exit status {st:#x}: signal {sig} does not end a "
            "process by default"
        )
    if st & 0x80:
        notes.append(
            f"task {t.pid}: the zombie dumped core when it died of signal "
            f"{sig}; restarted, it dies of it without a core (WCOREDUMP clear)"
        )


_CAP_SETGID, _CAP_SETUID = 6, 7


def _privileged(t: Task, parent: Task | None) -> str:
    """Why t's exec was privileged ('' if it was not): AT_SECURE, or ids
    or capabilities that a plain fork and exec by its parent could not
    give it.  Such a task is never exec'd again with those ids and its
    recorded environment (the loader ignored LD_PRELOAD at the setuid
    exec; a plain exec would not)."""
    if t.at_secure:
        return "its exec was privileged (setuid, setgid or file capabilities)"
    if parent is None or t.exit_status is not None:
        return ""
    setids = 1 << _CAP_SETUID | 1 << _CAP_SETGID
    if parent.euid == 0 or parent.cap_permitted & setids:
        return ""  # it could give its child any ids
    uids = {parent.ruid, parent.euid, parent.suid, parent.fsuid}
    gids = {parent.rgid, parent.egid, parent.sgid, parent.fsgid}
    if (
        {t.ruid, t.euid, t.suid, t.fsuid} - uids
        or {t.rgid, t.egid, t.sgid, t.fsgid} - gids
        or set(t.groups) - set(parent.groups)
        or t.cap_permitted & ~parent.cap_permitted
    ):
        return (
            f"its ids or capabilities (uid {t.euid}) are more than its parent "
            f"(uid {parent.euid}) could give it"
        )
    return ""


def _which(cmd: str) -> str:
    """-- CMD's executable, found as the restarting user would find it:
    on the restarter's own PATH, never on a task's recorded one (which its
    owner chose)."""
    if "/" in cmd:
        return os.path.abspath(cmd)
    found = shutil.which(cmd, path=os.environ.get("PATH", os.defpath))
    if found is None:
        raise RestartError(f"{cmd}: command not found on this restart's PATH")
    return os.path.abspath(found)


def _table(t: Task) -> list[tuple[int, int, bool]]:
    return sorted((fd.fd, fd.objref, fd.cloexec) for fd in t.fds)


def _check(
    image: Image,
    argv: list[str] | None,
    limits: Limits = _DEFAULT_LIMITS,
    opts: RestartOptions | None = None,
) -> _Plan:
    if not image.tasks:
        raise RestartError("image has no task")
    _check_limits(image, limits)
    notes: list[str] = []
    exec_ids: dict[int, Task] = {}
    seen: dict[int, Task] = {}
    children: dict[int, list[Task]] = {}
    # stubs raise their soft limit as far as the hard one to hold the table
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if nofile == resource.RLIM_INFINITY:
        nofile = 1 << 30
    for i, t in enumerate(image.tasks):
        if t.pid <= 0 or t.pid in seen:
            raise RestartError(f"task {t.pid}: bad or duplicate pid")
        if i and t.ppid not in seen:
            raise RestartError(
                f"task {t.pid}: parent {t.ppid} is not an earlier task of the tree"
            )
        if t.exit_status is not None:
            _check_zombie(t, i, notes)
        prog = argv if argv is not None else t.argv
        if not prog and t.exit_status is None:
            raise RestartError(f"task {t.pid}: no argv to exec")
        if t.root != "/":
            raise RestartError(
                f"task {t.pid}: root directory {t.root!r}: chrooted tasks are "
                "not supported"
            )
        ids = (t.ruid, t.euid, t.suid, t.fsuid, t.rgid, t.egid, t.sgid, t.fsgid)
        if any(not 0 <= i < 0xFFFFFFFF for i in (*ids, *t.groups)):
            # (uid_t)-1 tells set*id() "leave unchanged": it would stay root
            raise RestartError(f"task {t.pid}: uid, gid or group out of range")
        if t.exe and not t.exe.startswith("/"):
            raise RestartError(f"task {t.pid}: executable {t.exe!r} is not absolute")
        why = _privileged(t, seen.get(t.ppid) if i else None)
        if why and not i:
            raise RestartError(
                f"task {t.pid}, the tree's root: {why}, and the parent that "
                "started it is not in the image: restart cannot start it again "
                "as it was started (checkpoint the tree of its parent)"
            )
        if why:
            parent = seen[t.ppid]
            exec_ids[t.pid] = parent
            notes.append(
                f"task {t.pid} ({t.comm}): {why}: it is exec'd again with the "
                f"ids of its parent {parent.pid} (uid {parent.euid}), as it was "
                "started, not with its own"
            )
        numbers: set[int] = set()
        for fd in t.fds:
            if fd.fd < 0 or fd.fd in numbers or fd.fd >= nofile:
                raise RestartError(f"task {t.pid}: bad or duplicate fd {fd.fd}")
            numbers.add(fd.fd)
            if fd.objref not in image.files:
                raise RestartError(f"task {t.pid} fd {fd.fd}: no file {fd.objref}")
        if i and seen[t.ppid].exit_status is not None:
            raise RestartError(
                f"task {t.pid}: its parent {t.ppid} is a zombie (a zombie's "
                "children are reparented)"
            )
        if t.files_pid:
            owner = seen.get(t.files_pid)
            if owner is None or owner.files_pid or owner.exit_status is not None:
                raise RestartError(
                    f"task {t.pid}: shares the fd table of {t.files_pid}, not an "
                    "earlier live task with a table of its own"
                )
            if _table(owner) != _table(t):
                raise RestartError(
                    f"task {t.pid}: shares the fd table of task {owner.pid} but "
                    "lists other fds"
                )
            notes.append(
                f"task {t.pid} shared the fd table of task {owner.pid} "
                "(CLONE_FILES): each gets a copy of it, since execve(2) "
                "unshares a shared table and restart execs every task"
            )
        if t.nr_threads > 1:
            notes.append(
                f"task {t.pid} had {t.nr_threads} threads: restart makes one "
                "process, which execs its command (threads are not recreated)"
            )
        seen[t.pid] = t
        children[t.pid] = []
        if i:
            children[t.ppid].append(t)

    plan = _Plan(
        image=image,
        tasks=list(image.tasks),
        children=children,
        argv={t.pid: list(argv if argv is not None else t.argv) for t in image.tasks},
        nofile=nofile,
        argv_given=argv is not None,
        warnings=notes,
        opts=opts or RestartOptions(),
        exe_given=_which(argv[0]) if argv else "",
        ids=exec_ids,
    )
    # each kind's files, in image order: one pass, not one per kind
    for ref, f in image.files.items():
        if ref != f.objref or ref <= 0:
            raise RestartError(f"file {ref}: objref mismatch ({f.objref})")
        owner = kinds.by_file_kind(f.kind)
        if owner is None:
            kind = FileKind(f.kind).name if f.kind in FileKind else str(f.kind)
            raise RestartError(f"objref {ref}: cannot restore a file of kind {kind}")
        plan.files.setdefault(owner, []).append(f)
    for kind in kinds.KINDS:
        kind.check(plan.files.get(kind, []), plan)
    return plan


# ---- step 2: objects ----------------------------------------------------------


class _Objects:
    """The coordinator's own fds on the objects it creates: all closed once
    inserted (or on failure), so that only the hash holds the objects."""

    def __init__(self, ctx: Context, plan: _Plan) -> None:
        self.ctx = ctx
        self.plan = plan
        self.own: list[int] = []
        self.inserts: list[tuple[int, int]] = []
        self.helpers = 0  # helper processes run (as_holder)

    def keep(self, fd: int) -> int:
        """An fd the coordinator holds until the objhash holds the object."""
        self.own.append(fd)
        return fd

    def insert(self, objref: int, fd: int) -> None:
        """fd's file goes into the objhash under objref."""
        self.inserts.append((objref, fd))

    def done(self) -> None:
        """A whole object was made: insert what is pending if many are open."""
        self.flush(self.ctx, _FLUSH_ABOVE)

    def as_holder(self, creds: Creds, fn: Callable[[Objects], None]) -> None:
        """fn with a task's rights (kinds/base.py Objects.as_holder)."""
        if creds.root:
            fn(self)  # root's own objects: made here, as always
            return
        self.helpers += 1
        _run_helper(self, creds, fn)

    def close(self) -> None:
        own, self.own = self.own, []
        for fd in own:
            with contextlib.suppress(OSError):
                os.close(fd)

    def flush(self, ctx: Context, above: int = 0) -> None:
        """Insert what was made and close the coordinator's fds on it, when
        more than `above` are open (the coordinator's fd limit bounds them)."""
        if len(self.own) <= above:
            return
        try:
            ctx.insert_many(self.inserts)
        except CkptError as e:
            raise RestartError(f"inserting objects into the objhash: {e}") from e
        self.inserts = []
        self.close()


_FLUSH_ABOVE = 256  # coordinator fds held before inserting them


def _create_objects(ctx: Context, image: Image, plan: _Plan) -> None:
    objs = _Objects(ctx, plan)
    try:
        for kind in kinds.KINDS:
            files = plan.files.get(kind)
            if not files:
                continue
            try:
                kind.restore(objs, files, plan)
            except OSError as e:
                raise RestartError(
                    f"cannot restore a {kind.name} file: {e.strerror or e}",
                    e.errno or 0,
                ) from e
        objs.flush(ctx)
    finally:
        objs.close()  # the hash holds them now (or restart failed)


# ---- helpers with a holder's rights ----------------------------------------------
#
# A helper is a fork of the coordinator that takes a task's credentials and
# makes that task's objects (kinds/base.py Objects.as_holder).  It talks to
# the coordinator over a SOCK_SEQPACKET pair, one JSON message per packet:
#   {"inserts": [[objref, i], ...]} + fds   fds[i] is objref's object
#   {"warn": [line, ...]}                   lines for plan.warnings
#   {"error": ..., "errno": n, "msg": s}   what fn raised; the helper exits
#   {"end": true}                           fn returned, all sent
# The coordinator believes no more of a helper than these shapes: it runs
# with the user's ids, so its messages are checked like an image's records.

_HELPER_FDS = 250  # fds per packet (SCM_MAX_FD is 253)
_HELPER_MSG = 1 << 16  # bytes of one packet's JSON at most


class _HelperObjects:
    """The Objects a helper's fn fills: its fds go to the coordinator."""

    def __init__(self, chan: socket.socket) -> None:
        self.chan = chan
        self.own: list[int] = []
        self.inserts: list[tuple[int, int]] = []

    def keep(self, fd: int) -> int:
        self.own.append(fd)
        return fd

    def insert(self, objref: int, fd: int) -> None:
        self.inserts.append((objref, fd))

    def done(self) -> None:
        if len(self.own) >= _HELPER_FDS:
            self.flush()

    def as_holder(self, creds: Creds, fn: Callable[[Objects], None]) -> None:
        fn(self)  # already a holder's helper: the caller grouped by holder

    def flush(self) -> None:
        """Send what was inserted (fds in packets of _HELPER_FDS, each
        with its inserts), then close every fd kept."""
        fds = unique(fd for _, fd in self.inserts)
        for at in range(0, len(fds), _HELPER_FDS):
            chunk = fds[at : at + _HELPER_FDS]
            index = {fd: i for i, fd in enumerate(chunk)}
            pairs = [[ref, index[fd]] for ref, fd in self.inserts if fd in index]
            _send(self.chan, {"inserts": pairs}, chunk)
        self.inserts = []
        own, self.own = self.own, []
        for fd in own:
            with contextlib.suppress(OSError):
                os.close(fd)


def _send(chan: socket.socket, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(msg).encode()
    if fds:
        socket.send_fds(chan, [data], list(fds))
    else:
        chan.send(data)


def _helper(
    chan: socket.socket,
    parent: int,
    creds: Creds,
    fn: Callable[[Objects], None],
    plan: _Plan,
) -> NoReturn:
    """The helper process: never returns into the coordinator's code."""
    code = _STUB_FAILED
    try:
        child_init()
        close_all_except({chan.fileno()})
        # nobody with the user's ids may ptrace it or read its memory (a
        # copy of the coordinator's); set again after the ids changed
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
        creds.take()
        syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
        # after the ids (changing them clears it): die with the coordinator
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(code)
        seen = len(plan.warnings)
        objs = _HelperObjects(chan)
        fn(objs)
        objs.flush()
        for w in plan.warnings[seen:]:
            _send(chan, {"warn": [w[:MSG_MAX]]})  # one a packet: any size fits
        _send(chan, {"end": True})
        code = 0
    except BaseException as e:  # noqa: BLE001 - a helper never returns
        with contextlib.suppress(BaseException):
            if isinstance(e, RestartError):
                what = {"error": "restart", "errno": e.errno, "msg": str(e)}
            elif isinstance(e, OSError):
                what = {
                    "error": "os",
                    "errno": e.errno or 0,
                    "msg": e.strerror or str(e),
                    "filename": None if e.filename is None else str(e.filename),
                }
            else:
                what = {"error": "other", "errno": 0, "msg": f"{type(e).__name__}: {e}"}
            what["msg"] = what["msg"][:MSG_MAX]
            _send(chan, what)
    os._exit(code)


def _helper_error(msg: dict[str, Any], uid: int) -> Exception:
    err = msg.get("errno")
    text = msg.get("msg")
    if not isinstance(err, int) or not isinstance(text, str):
        return RestartError(f"helper of uid {uid}: a malformed error report")
    if msg.get("error") == "os":
        name = msg.get("filename")
        if isinstance(name, str):
            return OSError(err, text, name)
        return OSError(err, text)
    return RestartError(text, err)


def _run_helper(objs: _Objects, creds: Creds, fn: Callable[[Objects], None]) -> None:
    """Fork a helper with creds, run fn there, insert what it sends."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    me = os.getpid()
    try:
        pid = os.fork()
    except OSError as e:
        ours.close()
        theirs.close()
        raise RestartError(f"fork of a helper for uid {creds.uid}: {e.strerror}") from e
    if pid == 0:
        ours.close()
        _helper(theirs, me, creds, fn, objs.plan)
    theirs.close()
    ended = False
    try:
        while True:
            data, fds, flags, _ = socket.recv_fds(
                ours, _HELPER_MSG, _HELPER_FDS, socket.MSG_CMSG_CLOEXEC
            )
            for fd in fds:
                objs.keep(fd)  # closed with the others, whatever happens
            if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
                raise RestartError(f"helper of uid {creds.uid}: a truncated message")
            if not data:
                raise RestartError(
                    f"helper of uid {creds.uid} exited before it was done"
                )
            try:
                msg = json.loads(data)
            except ValueError:
                msg = None
            if not isinstance(msg, dict):
                raise RestartError(f"helper of uid {creds.uid}: a malformed message")
            if "error" in msg:
                ended = True  # it exits once it said so
                raise _helper_error(msg, creds.uid)
            if msg.get("end") is True:
                ended = True
                break
            pairs, warn = msg.get("inserts"), msg.get("warn")
            if isinstance(pairs, list):
                for pair in pairs:
                    if (
                        not isinstance(pair, list)
                        or len(pair) != 2
                        or not all(type(x) is int for x in pair)
                        or not 0 <= pair[1] < len(fds)
                    ):
                        raise RestartError(
                            f"helper of uid {creds.uid}: a malformed insert"
                        )
                    objs.insert(pair[0], fds[pair[1]])
                objs.done()
            elif isinstance(warn, list) and all(isinstance(w, str) for w in warn):
                objs.plan.warnings.extend(warn)
            else:
                raise RestartError(f"helper of uid {creds.uid}: an unknown message")
    finally:
        ours.close()
        if not ended:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # our child, not reaped: its pid
        os.waitpid(pid, 0)


# ---- process helpers ------------------------------------------------------------


# ---- step 3: the stubs ------------------------------------------------------------


def _rlim(v: int) -> int:
    return resource.RLIM_INFINITY if v == RLIM_INFINITY else v


_CAP_SYS_ADMIN = 21


@functools.cache
def _cap_last() -> int:
    """The highest capability this kernel has."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def _caps(mask: int) -> list[int]:
    return [c for c in range(_cap_last() + 1) if mask >> c & 1]


def _filters_need_admin(t: Task) -> bool:
    """seccomp(2) takes a filter from a task without no_new_privs only if
    it holds CAP_SYS_ADMIN: the stub keeps it (permitted, not effective)
    until right before the exec, which drops it (no file capabilities)."""
    return bool(t.seccomp) and not t.no_new_privs


def _limits_before_ids(t: Task, ids: Task) -> bool:
    """What must be given while the stub is still root: the inheritable
    set first (capset may add an inheritable bit only within the bounding
    set), then the bounding set (PR_CAPBSET_DROP needs CAP_SETPCAP).
    Returns whether the permitted set must outlive setresuid
    (SECBIT_KEEP_CAPS): ids other than 0 in all of real, effective and
    saved make the kernel clear it (and the ambient set), while raising
    the ambient set, setting securebits (CAP_SETPCAP) or installing
    filters without no_new_privs (CAP_SYS_ADMIN) still need it.
    Securebits are set after setresuid, so that NO_SETUID_FIXUP or
    KEEP_CAPS among them cannot change what setresuid does."""
    try:
        _, prm, _ = syscalls.capget()
        if _filters_need_admin(t) and not prm >> _CAP_SYS_ADMIN & 1:
            raise RestartError(
                "its seccomp filters were installed without no_new_privs: "
                "installing them again needs CAP_SYS_ADMIN, which this restart "
                "lacks"
            )
        if t.cap_bset is not None:
            eff, prm, _ = syscalls.capget()
            syscalls.capset(eff, prm, t.cap_inheritable)
            for cap in _caps(~t.cap_bset):
                if syscalls.prctl(syscalls.PR_CAPBSET_READ, cap):
                    syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
        bits = syscalls.prctl(syscalls.PR_GET_SECUREBITS)
        keep = 0 not in (ids.ruid, ids.euid, ids.suid) and bool(
            (t.cap_bset is not None and t.cap_ambient)
            or (t.securebits is not None and t.securebits != bits)
            or _filters_need_admin(t)
        )
        if keep:
            syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 1)
    except OSError as e:
        raise RestartError(f"capability sets: {e}") from e
    return keep


def _limits_after_ids(t: Task, ids: Task, keep: bool) -> None:
    """The ambient set, securebits and the exec's LSM label once the ids
    are taken; then, for a task that is not root, a permitted set no
    larger than the kernel would have left it (the ambient set, and
    CAP_SYS_ADMIN for its filters); then a check of what the kernel has."""
    try:
        if ids.euid != 0:
            # setresuid cleared the effective set; the permitted one stayed
            # (KEEP_CAPS, or 0 in another id): raised for the steps below
            _, prm, inh = syscalls.capget()
            syscalls.capset(prm, prm, inh)
        if t.cap_bset is not None:
            for cap in _caps(t.cap_ambient):
                syscalls.prctl(
                    syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, cap
                )
        if t.securebits is not None:
            if syscalls.prctl(syscalls.PR_GET_SECUREBITS) != t.securebits:
                syscalls.prctl(syscalls.PR_SET_SECUREBITS, t.securebits)
        elif keep:
            syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 0)
        if ids.euid != 0:
            # effective empty again, as setresuid left it, and under
            # KEEP_CAPS no more permitted than the kernel would have left
            _, prm, inh = syscalls.capget()
            if keep:
                admin = 1 << _CAP_SYS_ADMIN if _filters_need_admin(t) else 0
                prm &= t.cap_ambient | admin
            syscalls.capset(0, prm, inh)
    except OSError as e:
        raise RestartError(f"capability sets or securebits: {e}") from e
    _exec_label(t)
    _verify_limits(t, ids)


def _verify_limits(t: Task, ids: Task) -> None:
    """What the kernel has, against what the task had: the stub reports a
    mismatch and every stub is killed."""
    st = {}
    with open("/proc/thread-self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            st[key] = value.strip()
    every = (1 << (_cap_last() + 1)) - 1
    got: dict[str, int] = {}
    want: dict[str, int] = {}
    if t.cap_bset is not None:
        for key, value in (
            ("CapInh", t.cap_inheritable),
            ("CapBnd", t.cap_bset),
            ("CapAmb", t.cap_ambient),
        ):
            got[key], want[key] = int(st[key], 16), value & every
    if t.securebits is not None:
        got["securebits"] = syscalls.prctl(syscalls.PR_GET_SECUREBITS)
        want["securebits"] = t.securebits
    if 0 not in (ids.ruid, ids.euid, ids.suid):
        # nothing more than the ambient set (and CAP_SYS_ADMIN, not
        # effective, for the filters): the exec computes the rest
        admin = 1 << _CAP_SYS_ADMIN if _filters_need_admin(t) else 0
        ambient = t.cap_ambient if t.cap_bset is not None else 0
        got["CapPrm"] = int(st["CapPrm"], 16) & ~(ambient | admin)
        got["CapEff"] = int(st["CapEff"], 16) & ~ambient
        want["CapPrm"] = want["CapEff"] = 0
    if got != want:
        raise RestartError(f"limits are {got}, not {want}")


_AA_EXEC = "/proc/thread-self/attr/apparmor/exec"  # AppArmor's own
_LSM_EXEC = "/proc/thread-self/attr/exec"  # the first LSM's


def _exec_label(t: Task) -> None:
    """The LSM label the exec is to give the task, where one was set: an
    AppArmor profile ("NAME (MODE)" in attr/current) through
    attr/apparmor/exec ("exec NAME"), another LSM's label through
    attr/exec.  A label this kernel does not take refuses the restart:
    the task would run unconfined otherwise."""
    label = t.label
    if os.path.exists(_AA_EXEC):
        if label.endswith(")") and " (" in label:
            label = label[: label.rindex(" (")]  # the mode
        path, value = _AA_EXEC, f"exec {label}"
    else:
        path, value = _LSM_EXEC, label
    if label in ("", "unconfined"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise RestartError(
            f"its LSM label {t.label!r} cannot be set for its exec "
            f"({path}: {e.strerror})"
        ) from e


def _take_credentials(t: Task, ids: Task | None = None) -> None:
    """The recorded identity, in the one order that cannot half-succeed
    unnoticed: limits while still privileged (raising a hard limit needs
    CAP_SYS_RESOURCE), then groups, gids and uids (after setresuid nothing
    else may be changed); a uid other than 0 in all of real, effective and
    saved leaves the task no capability (the kernel clears them).  Any
    failure raises: the stub reports it and every stub is killed.  ids:
    whose uids, gids and groups (a privileged exec's parent's, else t's)."""
    os.umask(t.umask)
    if t.rlimits is not None:
        for r, (cur, top) in enumerate(t.rlimits):
            try:
                resource.setrlimit(r, (_rlim(cur), _rlim(top)))
            except (OSError, ValueError) as e:
                raise RestartError(f"setrlimit {r} ({cur}, {top}): {e}") from e
    limits, t = t, ids or t
    keep = _limits_before_ids(limits, t)
    # groups, gids, uids, each checked as the kernel has it
    Creds.exact(t, limits.umask).take()
    _limits_after_ids(limits, t, keep)
    t = limits
    if t.no_new_privs:
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)


def _exec(plan: _Plan, task: Task) -> NoReturn:
    argv = plan.argv[task.pid]
    env: dict[bytes, bytes] = {}
    for e in task.env:
        key, eq, value = os.fsencode(e).partition(b"=")
        if eq and key:
            env.setdefault(key, value)
    if task.seccomp:
        _exec_filtered(plan.exe_given if plan.argv_given else task.exe, argv, env, task)
    if plan.argv_given:
        os.execve(plan.exe_given, argv, env)
    if not task.exe:
        os.execvpe(argv[0], argv, env)  # a hand-made image's task
    # the program that ran, not what argv[0] finds: argv may be "-bash"
    os.execve(task.exe, argv, env)


def _exec_filtered(
    path: str, argv: list[str], env: dict[bytes, bytes], task: Task
) -> NoReturn:
    """The task's seccomp filters, installed last, then the exec, with no
    system call between (syscalls.seccomp_execve): the stub's own steps
    ran free of them.  A filter that forbids the exec leaves the task
    dead (exit 127), never running without its filters."""
    if not path:  # a hand-made image's task: argv[0] on its PATH
        search = os.fsdecode(env.get(b"PATH", os.defpath.encode()))
        path = shutil.which(argv[0], path=search) or argv[0]
    if _filters_need_admin(task):
        eff, prm, inh = syscalls.capget()
        syscalls.capset(eff | 1 << _CAP_SYS_ADMIN, prm, inh)
    syscalls.seccomp_execve(path, argv, env, task.seccomp)
    raise AssertionError("not reached: seccomp_execve returns by raising")


def _stub(
    plan: _Plan, task: Task, ctx: Context, wfd: int, ancestors: dict[int, int]
) -> NoReturn:
    """A stub for one task: never returns to the caller's code."""
    code = _STUB_FAILED
    try:
        child_init()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        say(wfd, f"pid {task.pid} {os.getpid()}")
    except BaseException:  # noqa: BLE001 - a stub never returns into the caller
        os._exit(code)  # coordinator gone: nothing to report to
    box = [wfd]  # the report fd, wherever _stub_build moved it
    if task.exit_status is not None:
        _zombie(task, ctx, wfd, ancestors)
    try:
        _stub_build(plan, task, ctx, box, ancestors)
        wfd = box[0]
        # who forked this stub: the stub above it, or the coordinator
        parent = ancestors.get(task.ppid, plan.coordinator)
        _take_credentials(task, plan.ids.get(task.pid))
        _enter_cwd(plan, task)  # walked with the task's rights
        # after the credentials (changing them clears it): die with the parent
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(code)  # the parent died before the line above
        say(wfd, f"ready {task.pid}")
        os.close(wfd)
        signal.sigwait({signal.SIGUSR1})
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, 0)  # released: normal life
        for k in kinds.KINDS:
            k.at_release(plan, task)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)  # Python ignores them; exec keeps it
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        code = _EXEC_FAILED
        _exec(plan, task)
    except BaseException as e:  # noqa: BLE001 - a stub never returns into the caller
        with contextlib.suppress(BaseException):
            if code == _STUB_FAILED:
                say(box[0], f"error {task.pid} {e}")
    os._exit(code)


def _after_setsid(plan: _Plan, task: Task, ctx: Context, wfd: int) -> None:
    """A new session leader, before it forks its children: what each kind
    does there (the terminal's: take the controlling terminal)."""

    def fetch(ref: int) -> int:
        try:
            (fd,) = ctx.fetch_many([ref])
        except CkptError as e:
            raise RestartError(f"fetch {ref}: {e}") from e
        return fd

    def report(line: str) -> None:
        say(wfd, f"note {task.pid} {line}")

    for k in kinds.KINDS:
        k.after_setsid(plan, task, fetch, report)


def _session(
    task: Task, ancestors: dict[int, int], ctty: Callable[[], None] | None = None
) -> None:
    """The task's session or process group; ctty: a new session leader
    takes its controlling terminal (before it forks its children)."""
    if task.pid == task.sid:
        os.setsid()
        if ctty is not None:
            ctty()
    elif task.pgid == task.pid:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
    elif task.pgid in ancestors:
        with contextlib.suppress(OSError):  # another session: keep the parent's
            os.setpgid(0, ancestors[task.pgid])


def _zombie(task: Task, ctx: Context, wfd: int, ancestors: dict[int, int]) -> NoReturn:
    """A zombie's stub: its ids, then it exits with the recorded status
    before the barrier.  Its parent's stub does not reap it (SIGCHLD stays
    SIG_DFL, which leaves a zombie, and a stub waits only in sigwait) and
    neither does the command the parent execs, unless it calls wait()."""
    status = task.exit_status or 0
    try:
        close_all_except({wfd})
        _session(task, ancestors)
        _take_credentials(task)
        say(wfd, f"ready {task.pid}")
        os.close(wfd)
        sig = status & 0x7F
        if sig:
            # no core file, even through a core_pattern pipe (RLIMIT_CORE
            # does not stop those): the status says the signal, not a dump
            syscalls.prctl(syscalls.PR_SET_DUMPABLE, 0)
            if sig != signal.SIGKILL:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            os.kill(os.getpid(), sig)
            signal.sigwait({sig})  # not reached: the signal ends the stub
        os._exit(status >> 8)
    except BaseException as e:  # noqa: BLE001 - a stub never returns into the caller
        with contextlib.suppress(BaseException):
            say(wfd, f"error {task.pid} {e}")
    os._exit(_STUB_FAILED)


def _stub_build(
    plan: _Plan, task: Task, ctx: Context, box: list[int], ancestors: dict[int, int]
) -> None:
    """Build the task's state: box[0] is the report fd, moved out of the way."""
    wfd = box[0]
    close_all_except({ctx.fileno(), wfd})
    me = os.getpid()
    _session(task, ancestors, functools.partial(_after_setsid, plan, task, ctx, wfd))
    # children first, while this stub holds only the context and the report fd
    mine = ancestors | {task.pid: me}
    for child in plan.children[task.pid]:
        try:
            pid = os.fork()
        except OSError as e:
            raise RestartError(f"fork for task {child.pid}: {e.strerror}") from e
        if pid == 0:
            _stub(plan, child, ctx, wfd, mine)

    objref = {fd.fd: plan.objref_of(task, fd.fd, fd.objref) for fd in task.fds}
    refs = unique(objref.values())
    floor = max([fd.fd for fd in task.fds] + [2]) + 1
    # temporaries above the recorded numbers may not fit under the limit
    soft = make_room(floor + len(refs) + 2)
    try:
        # each file lands at the lowest free number: in the order of their
        # first fds (refs' order) that is often the recorded number itself
        got = ctx.fetch_many(refs, cloexec=False) if refs else []
    except CkptError as e:
        for fd in e.results:
            os.close(fd)
        raise RestartError(f"fetch: {e}") from e
    os.close(ctx.fileno())  # fetched: the stub holds its own references
    first: dict[int, int] = {}  # objref -> its lowest recorded fd
    for fd in task.fds:
        ref = objref[fd.fd]
        first[ref] = min(first.get(ref, fd.fd), fd.fd)
    # the files not at their first number move above every recorded one
    # (key 0, no objref, moves the report fd with them): the dup2()s below
    # then never land on a file still to be placed
    at, away = {}, {0: wfd}
    for ref, fd in zip(refs, got, strict=True):
        (at if fd == first[ref] else away)[ref] = fd
    away = move_above(away, floor)
    box[0] = wfd = away.pop(0)
    at |= away
    for fd in task.fds:
        src = at[objref[fd.fd]]
        if src != fd.fd:
            os.dup2(src, fd.fd, inheritable=not fd.cloexec)
        elif fd.cloexec:  # fetched without close-on-exec
            fcntl.fcntl(src, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
    close_all_except({fd.fd for fd in task.fds} | {wfd})
    restore_limit(soft, floor)


def _enter_cwd(plan: _Plan, task: Task) -> None:
    """chdir to the recorded cwd with the task's credentials already taken
    (the walk is the task's own: a directory it cannot enter is refused,
    never entered as root), then check it is the directory checkpointed
    (type, owner, and device and inode unless relocate), as a reopened
    file is checked: not whatever the path leads to now."""
    try:
        os.chdir(task.cwd)
        st = os.stat(".")
    except OSError as e:
        raise RestartError(f"chdir {task.cwd}: {e.strerror}") from e
    if not task.cwd_mode:
        return  # not recorded (a hand-made image)
    want = (task.cwd_mode, task.cwd_uid, task.cwd_gid)
    got = (st.st_mode, st.st_uid, st.st_gid)
    if not plan.relocate:
        want += (task.cwd_dev, task.cwd_ino)
        got += (st.st_dev, st.st_ino)
    if got != want:
        raise RestartError(
            f"cwd {task.cwd}: not the directory checkpointed (mode, owner, "
            f"device, inode {got}, recorded {want})"
        )


class _Procs:
    """The stubs the coordinator knows of, by recorded pid."""

    def __init__(self) -> None:
        self.pids: dict[int, int] = {}  # recorded -> new
        self.pidfds: dict[int, int] = {}  # recorded -> pidfd
        self.children: dict[int, int] = {}  # ours to reap: recorded -> new
        self.notes: list[str] = []  # what stubs reported and did not refuse

    def go(self) -> None:
        """Release every stub."""
        self.signal(signal.SIGUSR1)

    def add(self, rec: int, new: int) -> None:
        if rec in self.pids:
            return
        self.pids[rec] = new
        with contextlib.suppress(OSError):
            self.pidfds[rec] = os.pidfd_open(new)

    def signal(self, sig: int) -> None:
        for rec, new in self.pids.items():
            with contextlib.suppress(ProcessLookupError):
                pidfd = self.pidfds.get(rec)
                if pidfd is not None:
                    signal.pidfd_send_signal(pidfd, sig)
                elif rec in self.children:
                    os.kill(new, sig)  # not reaped yet: the pid is still its

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL all, reap ours, wait until the others have exited."""
        self.signal(signal.SIGKILL)
        deadline = time.monotonic() + timeout
        for rec in list(self.children):
            self.reap(rec, None)
        for rec, pidfd in self.pidfds.items():
            _wait_pidfd(pidfd, deadline)
        self.close()

    def reap(self, rec: int, deadline: float | None) -> int | None:
        """Reap one of our children; its exit code, None on timeout."""
        pidfd = self.pidfds.get(rec)
        if pidfd is not None and not _wait_pidfd(pidfd, deadline):
            return None
        try:
            _, status = os.waitpid(self.children.pop(rec), 0)
        except ChildProcessError:
            return None
        return os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        pidfds, self.pidfds = self.pidfds, {}
        for fd in pidfds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


def _wait_pidfd(pidfd: int, deadline: float | None) -> bool:
    """Has the process exited (pidfd readable) by the deadline?"""
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    while True:
        left = None if deadline is None else max(0, deadline - time.monotonic())
        if p.poll(None if left is None else left * 1000):
            return True
        if left is not None and left <= 0:
            return False


def _read_reports(
    rfd: int, procs: _Procs, deadline: float, stop_on_error: bool = True
) -> tuple[set[int], str | None]:
    """Read report lines until EOF (every stub has reported and closed its
    end, or died) or the deadline; returns the ready tasks and the first
    error."""
    ready: set[int] = set()
    error: str | None = None
    buf = b""
    p = select.poll()
    p.register(rfd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return ready, error or "timed out waiting for the stubs to report"
        if not p.poll(left * 1000):
            continue
        chunk = os.read(rfd, 65536)
        if not chunk:
            return ready, error
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            word, _, rest = raw.decode(errors="replace").partition(" ")
            if word == "pid":
                rec, new = rest.split()
                procs.add(int(rec), int(new))
            elif word == "ready":
                ready.add(int(rest))
            elif word == "note":
                procs.notes.append(f"task {rest}")
            elif word == "error" and error is None:
                rec, _, msg = rest.partition(" ")
                error = f"task {rec}: {msg}"
        if error is not None and stop_on_error:
            return ready, error


def _wait_dead(pids: list[int], deadline: float) -> str | None:
    """A zombie's stub reports ready, then dies: wait for each to be dead, so
    that the tree restart hands back is the tree that was saved (a test
    found one still alive at the barrier)."""
    for pid in pids:
        while proc.state(pid) not in ("Z", ""):  # "": gone
            if time.monotonic() > deadline:
                return f"pid {pid}, a zombie's stub, did not exit in time"
            time.sleep(0.001)
    return None


def _spawn(ctx: Context, plan: _Plan, procs: _Procs, timeout: float) -> None:
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    try:
        root = plan.tasks[0]
        pid = os.fork()
        if pid == 0:
            _stub(plan, root, ctx, wfd, {})
        os.close(wfd)
        wfd = -1
        procs.children[root.pid] = pid
        procs.add(root.pid, pid)
        deadline = time.monotonic() + timeout
        ready, error = _read_reports(rfd, procs, deadline)
        if error is None and len(ready) != len(plan.tasks):
            missing = sorted({t.pid for t in plan.tasks} - ready)
            error = f"tasks {missing} exited before reporting"
        if error is None:
            zombies = [t.pid for t in plan.tasks if t.exit_status is not None]
            error = _wait_dead([procs.pids[z] for z in zombies], deadline)
        if error is not None:
            # kill what is known, then drain until EOF: a stub forked in the
            # meantime says its pid first, and is killed in turn
            procs.signal(signal.SIGKILL)
            drain_deadline = time.monotonic() + timeout
            while True:
                before = set(procs.pids)
                _read_reports(rfd, procs, drain_deadline, stop_on_error=False)
                if set(procs.pids) == before or time.monotonic() > drain_deadline:
                    break
                procs.signal(signal.SIGKILL)
            raise RestartError(error)
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)


# ---- the result -----------------------------------------------------------------


def _abandon(procs: _Procs) -> None:
    """A Restarted collected without release(): its stubs are killed."""
    with contextlib.suppress(Exception):
        procs.kill()


@dataclass
class Restarted:
    """A restarted tree; its tasks wait at the barrier until release().

    Dropped (garbage-collected) before release(), it kills its stubs; they
    also abort by themselves when the coordinator dies first.
    """

    context: Context
    pids: dict[int, int]  # recorded pid -> new pid
    _procs: _Procs = field(repr=False)
    released: bool = False
    warnings: list[str] = field(default_factory=list)  # reported, not refused

    def __post_init__(self) -> None:
        self._finalizer = weakref.finalize(self, _abandon, self._procs)

    def release(self) -> None:
        """CKPT_IOC_RELEASE (clear/free per policy), then let every task go."""
        if self.released:
            raise RestartError("already released")
        try:
            self.context.release()
        except (CkptError, ValueError) as e:
            self.kill()
            raise RestartError(f"release: {e}", getattr(e, "errno", 0) or 0) from e
        self.released = True
        self._finalizer.detach()
        self._procs.go()

    def teardown(self) -> None:
        """Close the context: under clear-at-end the hash lets go only now."""
        self.context.close()

    def wait(self, timeout: float | None = None) -> dict[int, int]:
        """Wait for the restarted tasks that are our children (the root: the
        others are their restarted parents' children); recorded pid -> exit
        code (negative: killed by that signal). Then teardown()."""
        if not self.released:
            raise RestartError("wait() before release(): the tasks are at the barrier")
        deadline = None if timeout is None else time.monotonic() + timeout
        codes: dict[int, int] = {}
        for rec in list(self._procs.children):
            code = self._procs.reap(rec, deadline)
            if code is None:
                raise TimeoutError(f"task {rec} ({self.pids[rec]}) still runs")
            codes[rec] = code
        self._procs.close()
        self.teardown()
        return codes

    def kill(self) -> None:
        """SIGKILL every restarted task, reap them, teardown()."""
        self._finalizer.detach()
        self._procs.kill()
        self.teardown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


@gcpause.paused()  # its tasks wait on this process: no collection meanwhile
def restart(
    image: Image,
    *,
    policy: Policy = Policy.CLEAR_EARLY,
    argv: Sequence[str] | None = None,
    release: bool = True,
    timeout: float = 10.0,
    relocate: bool = False,
    limits: Limits = _DEFAULT_LIMITS,
    options: RestartOptions | None = None,
) -> Restarted:
    """Recreate image's objects and tasks; each task takes its recorded
    credentials and execs its recorded executable with its recorded argv and
    environment (or argv, looked up on PATH) with its fd table restored.

    release=False returns with every task at the barrier (fd tables ready to
    inspect); Restarted.release() lets them go.  relocate: files reopened by
    path may have another device and inode (type and owner are still
    checked).  limits: more tasks, fds or pipe bytes are refused.  Any
    failure raises RestartError after killing and reaping every stub and
    closing every fd and the context; what was only reported (a file now
    shorter than its offset, an eventfd's unknown EFD_SEMAPHORE) is in
    Restarted.warnings and warned about (RuntimeWarning).  options: how
    what the image cannot carry is mapped (the terminal's stdio, devices
    the user names).
    """
    plan = _check(image, list(argv) if argv is not None else None, limits, options)
    plan.relocate = relocate
    plan.coordinator = os.getpid()
    try:
        ctx = Context()
    except OSError as e:
        raise RestartError(f"cannot open the ckpt device: {e}", e.errno or 0) from e
    procs: _Procs | None = None
    try:
        procs = _Procs()
        try:
            ctx.setup(policy=policy, autogrow=True)
            _create_objects(ctx, image, plan)
            _spawn(ctx, plan, procs, timeout)
            for kind in kinds.KINDS:
                kind.after_spawn(ctx, image, plan, timeout)
        except CkptError as e:
            raise RestartError(str(e), e.errno or 0) from e
        except OSError as e:
            raise RestartError(f"{e.strerror or e}", e.errno or 0) from e
        plan.warnings.extend(procs.notes)
        done = Restarted(
            context=ctx, pids=dict(procs.pids), _procs=procs, warnings=plan.warnings
        )
    except BaseException:
        if procs is not None:
            procs.kill()
        ctx.close()
        raise
    for w in plan.warnings:
        warnings.warn(w, RuntimeWarning, stacklevel=2)
    if release:
        done.release()
    return done
