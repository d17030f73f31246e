"""Terminals and stdio: a tty or pty on any fd, any character device on fds 0-2.

Checkpoint records such a file as the tree's terminal (FILE kind TTY with its
path and ``st_rdev``, then a TTY record): whether it is a terminal at all
(a virtio console port on fds 0-2 is not), whether it is a pty master, and,
when it is the controlling terminal of a session of the tree, that session
and its foreground process group (from ``/proc/PID/stat``: ``tty_nr``,
``session``, ``tpgid``; TIOCGPGRP answers only a task whose own controlling
terminal it is, which the coordinator's copy is not).

Restart never reopens the recorded terminal: a terminal is the user's, and
an image does not choose which one a task gets.  Its fds get, as CRIU's
"shell job" does, the restarting process's own stdio (``--stdio inherit``,
the default), or ``/dev/null`` (``--stdio null``), or a regular file
(``--stdio FILE``, created 0600 if missing, appended to).  Which of the
restarter's fds an fd gets (``slot``):

* fds 0, 1 and 2 get the restarter's fds 0, 1 and 2;
* a terminal on any other fd gets, by its access mode, fd 0 (read only),
  fd 1 (write only) or fd 2 (read and write: stderr is the stream a shell
  leaves open read-write on its terminal and redirects least);
* ``--stdio FILE``: slot 0 gets ``/dev/null`` (FILE is not input), slots 1
  and 2 FILE.

Fds that share one open file description in the tree and land on the same
slot share one after restart too; the restarter's fds 0-2 that share one
open file description (kcmp) are one object.

The session: a session leader of the tree is one again (``setsid``); if its
session had this terminal as controlling terminal and what replaces the
terminal is a tty that is no other session's controlling terminal (a pty
the restarter was started on without making it its own), the leader takes
it (``TIOCSCTTY`` without stealing) before forking its children, and the
recorded foreground process group gets the terminal back (``TIOCSPGRP``) at
release.  Where the kernel refuses (the replacement is not a tty, or is the
controlling terminal of the restarter's session), the task runs without a
controlling terminal and the restart says so in its warnings.  Tasks whose
session leader is outside the tree stay in the restarter's session and
have its controlling terminal.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import os
import signal
import stat
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntFlag

from pyckpt.abi import FileKind, HdrType, lib
from pyckpt.errors import RestartError
from pyckpt.kinds import chrdev
from pyckpt.kinds.base import (
    Collector,
    FdRef,
    Kind,
    Objects,
    Plan,
    Reader,
    Writer,
    extra,
)
from pyckpt.kinds.pipe import pipes
from pyckpt.model import File, Image, Task
from pyckpt.records import Layout, Record, bad
from pyckpt.syscalls import kcmp_file

TIOCGSID = 0x5429
TIOCSCTTY = termios.TIOCSCTTY
TIOCSPGRP = termios.TIOCSPGRP
TIOCGPGRP = termios.TIOCGPGRP

# major numbers (Documentation/admin-guide/devices.txt)
_PTY_MASTER_MAJORS = range(128, 136)  # UNIX98 pty masters
_PTY_SLAVE_MAJORS = range(136, 144)  # /dev/pts/N
_PTMX = (5, 2)

STDIO_INHERIT = "inherit"
STDIO_NULL = "null"
# the default: inherit for a tree of the restarting user's own, /dev/null
# for another user's (root's terminal is not given away)
STDIO_AUTO = "auto"


class TtyFlag(IntFlag):
    """ckpt_hdr_tty.flags (CKPT_TTY_*)."""

    TERMINAL = 0x1  # isatty(): a terminal, not a plain device on fds 0-2
    PTY_MASTER = 0x2  # the master side of a pseudo-terminal
    CTTY = 0x4  # the controlling terminal of session ``sid`` of the tree


TTY_FLAGS_ALL = int(TtyFlag.TERMINAL | TtyFlag.PTY_MASTER | TtyFlag.CTTY)


@dataclass
class Tty:
    """A terminal's state (File.extra of a TTY file): its TTY record."""

    flags: TtyFlag = TtyFlag(0)  # noqa: RUF009 - an immutable IntFlag value
    sid: int = 0  # CTTY: the session it controls
    pgrp: int = 0  # CTTY: that session's foreground process group (0: none)


# ---- checkpoint --------------------------------------------------------------


def is_pty_master(rdev: int) -> bool:
    major, minor = os.major(rdev), os.minor(rdev)
    return major in _PTY_MASTER_MAJORS or (major, minor) == _PTMX


def kind_name(rdev: int, terminal: bool) -> str:
    """A few words on what the device is, for show and messages."""
    major, minor = os.major(rdev), os.minor(rdev)
    if is_pty_master(rdev):
        return "pty master"
    if major in _PTY_SLAVE_MAJORS:
        return "pty"
    if major == 4:
        return "virtual console" if minor < 64 else "serial port"
    if (major, minor) == (5, 1):
        return "console"
    return "terminal" if terminal else "character device"


@dataclass(frozen=True)
class ProcTty:
    """What /proc/PID/stat says of a task's session and terminal."""

    sid: int
    tty_nr: int  # its controlling terminal's device number, 0 for none
    tpgid: int  # that terminal's foreground process group, -1 for none


def proc_tty(pid: int) -> ProcTty:
    with open(f"/proc/{pid}/stat", "rb") as f:
        # after the comm's closing paren: state ppid pgrp session tty_nr tpgid
        w = f.read().rpartition(b")")[2].split()
    return ProcTty(sid=int(w[3]), tty_nr=int(w[4]), tpgid=int(w[5]))


def probe(fd: int, st: os.stat_result, pids: list[int]) -> Tty:
    """The TTY record of the file ``fd`` (the coordinator's copy; ``st`` its
    fstat), given the tree's tasks: the first task whose controlling
    terminal it is names the session and its foreground group."""
    t = Tty()
    if os.isatty(fd):
        t.flags |= TtyFlag.TERMINAL
    if is_pty_master(st.st_rdev):
        t.flags |= TtyFlag.PTY_MASTER
        return t  # a master is nobody's controlling terminal
    if not t.flags & TtyFlag.TERMINAL:
        return t
    for pid in pids:
        try:
            p = proc_tty(pid)
        except (OSError, ValueError, IndexError):
            continue
        if p.tty_nr and p.tty_nr == st.st_rdev:
            t.flags |= TtyFlag.CTTY
            t.sid = p.sid
            t.pgrp = max(p.tpgid, 0)
            break
    return t


# ---- restart -----------------------------------------------------------------


def slot(fd: int, f_flags: int) -> int:
    """Which of the restarter's fds 0-2 replaces a terminal on ``fd``."""
    if fd <= 2:
        return fd
    acc = f_flags & os.O_ACCMODE
    if acc == os.O_RDONLY:
        return 0
    if acc == os.O_WRONLY:
        return 1
    return 2


def _auto_stdio(files: list[File], plan: Plan) -> str:
    """--stdio auto: the restarter's own terminal only for tasks of its own
    user; a tree of another user gets /dev/null (it could read what root
    types next, or inject input with TIOCSTI), and a warning says so."""
    me = os.geteuid()
    refs = {f.objref for f in files}
    others = sorted(
        {
            (t.pid, t.euid)
            for t in plan.tasks
            if t.euid != me and any(d.objref in refs for d in t.fds)
        }
    )
    if not others:
        return STDIO_INHERIT
    pid, uid = others[0]
    more = f" and {len(others) - 1} more" if len(others) > 1 else ""
    plan.warnings.append(
        f"task {pid} (uid {uid}){more}: another user's terminal becomes "
        "/dev/null, not this restart's own (--stdio inherit gives it yours, "
        "--stdio FILE a file)"
    )
    return STDIO_NULL


def check_stdio(how: str) -> None:
    """ValueError for a --stdio value restart cannot use (checked first)."""
    if how in (STDIO_AUTO, STDIO_INHERIT, STDIO_NULL):
        return
    if not how.startswith("/"):
        raise ValueError(
            f"--stdio {how!r}: 'auto', 'inherit', 'null' or an absolute path to a file"
        )
    try:
        st = os.stat(how, follow_symlinks=False)
    except FileNotFoundError:
        return  # created at restart
    except OSError as e:
        raise ValueError(f"--stdio {how}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(
            f"--stdio {how}: not a regular file (a terminal or device: start "
            "the restart with its stdio there, the default inherits it)"
        )


def _open_stdio_file(path: str) -> int:
    flags = (
        os.O_WRONLY
        | os.O_CREAT
        | os.O_APPEND
        | os.O_NOFOLLOW
        | os.O_NOCTTY
        | os.O_CLOEXEC
        | os.O_NONBLOCK
    )
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        raise RestartError(f"--stdio {path}: {e.strerror}", e.errno) from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RestartError(f"--stdio {path}: not a regular file")
    fcntl.fcntl(fd, fcntl.F_SETFL, os.O_APPEND)
    return fd


def _open_null() -> int:
    return os.open("/dev/null", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)


def _same_file(a: int, b: int) -> bool:
    me = os.getpid()
    try:
        return kcmp_file(me, a, me, b)
    except OSError:
        return False


def stdio_sources(slots: set[int], how: str) -> dict[int, int]:
    """One new close-on-exec fd per distinct object the slots get: slot ->
    fd, where slots that get one open file description share one fd (the
    caller closes each distinct fd once).  RestartError when the restarter's
    own fd for a slot is closed."""
    out: dict[int, int] = {}
    made: list[int] = []
    try:
        if how == STDIO_NULL:
            null = _open_null()
            made.append(null)
            return dict.fromkeys(slots, null)
        if how != STDIO_INHERIT:
            target = None
            null = None
            for s in sorted(slots):
                if s == 0:
                    if null is None:
                        null = _open_null()
                        made.append(null)
                    out[s] = null
                else:
                    if target is None:
                        target = _open_stdio_file(how)
                        made.append(target)
                    out[s] = target
            return out
        for s in sorted(slots):
            try:
                fcntl.fcntl(s, fcntl.F_GETFD)
            except OSError:
                raise RestartError(
                    f"a terminal is given the restarter's fd {s}, which is "
                    "closed: use --stdio null or --stdio FILE"
                ) from None
            shared = next((out[o] for o in out if _same_file(o, s)), None)
            if shared is not None:
                out[s] = shared
                continue
            out[s] = fcntl.fcntl(s, fcntl.F_DUPFD_CLOEXEC, 3)
            made.append(out[s])
        return out
    except BaseException:
        for fd in made:
            os.close(fd)
        raise


def take_ctty(fd: int) -> str:
    """Make the tty on fd the caller's controlling terminal (the caller is a
    session leader without one); '' or why the kernel refused.  Never steals
    (arg 0): a terminal that controls another session stays there."""
    if not os.isatty(fd):
        return "its replacement is not a terminal"
    try:
        fcntl.ioctl(fd, TIOCSCTTY, 0)
    except OSError as e:
        if e.errno == _errno.EPERM:
            return (
                "its replacement is the controlling terminal of another "
                "session (the restarter's)"
            )
        return f"TIOCSCTTY: {e.strerror}"
    return ""


def foreground(fd: int) -> int:
    """The foreground process group of fd's terminal, if it is the caller's
    controlling terminal; -1 otherwise."""
    try:
        buf = fcntl.ioctl(fd, TIOCGPGRP, b"\0\0\0\0")
    except OSError:
        return -1
    return int(struct.unpack("i", buf)[0])


def set_foreground(fd: int, pgrp: int) -> str:
    """tcsetpgrp() from a possibly background task: SIGTTOU blocked for the
    call (the kernel then allows it); '' or why not."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        fcntl.ioctl(fd, TIOCSPGRP, struct.pack("i", pgrp))
    except OSError as e:
        return f"TIOCSPGRP {pgrp}: {e.strerror}"
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return ""


# ---- the kind ------------------------------------------------------------------

# objrefs restart gives the extra slots of a terminal (a checkpoint numbers
# from 1 up and never gets here; an image that does is refused)
_SLOT_OBJREFS = (0x7FFFFFFF, 0x7FFFFFFE, 0x7FFFFFFD)


def _check_tty(rec: Record, name: str) -> None:
    f = rec.fields
    flags = f["flags"]
    if f["objref"] <= 0:
        raise bad(rec, name, f"objref {f['objref']} <= 0")
    if flags & ~lib.CKPT_TTY_FLAGS_ALL:
        raise bad(rec, name, f"unknown flags {flags:#x}")
    ctty = bool(flags & lib.CKPT_TTY_CTTY)
    if ctty and (not flags & lib.CKPT_TTY_TERMINAL or flags & lib.CKPT_TTY_PTY_MASTER):
        raise bad(rec, name, "CTTY on a pty master or on no terminal")
    if ctty and f["sid"] <= 0:
        raise bad(rec, name, f"sid {f['sid']} of a controlling terminal <= 0")
    if not ctty and (f["sid"] or f["pgrp"]):
        raise bad(rec, name, "sid or pgrp without CTTY")
    if f["pgrp"] < 0:
        raise bad(rec, name, f"pgrp {f['pgrp']} < 0")


def _ttys(image: Image) -> list[File]:
    return [f for f in image.files.values() if f.kind == FileKind.TTY]


@dataclass
class _Sessions:
    """The terminal's part of a restart plan (Plan.extra["tty"])."""

    # session leader's recorded pid -> objref of its controlling terminal,
    # taken (TIOCSCTTY, never stolen) before it forks its children
    ctty: dict[int, int] = field(default_factory=dict)
    # recorded pids of group leaders that take their terminal's foreground
    foreground: set[int] = field(default_factory=set)


def _sessions(plan: Plan) -> _Sessions:
    return plan.extra.setdefault(TtyKind.name, _Sessions())


class TtyKind(Kind):
    name = "tty"
    reparse = True
    kinds = (FileKind.TTY,)
    # after chrdev (KINDS order): every other character device
    reported = frozenset({FileKind.CHR})
    records = ((HdrType.TTY, Layout("struct ckpt_hdr_tty"), _check_tty),)
    shared_outside = True  # the shell that started the tree holds it too

    # ---- checkpoint ----

    def checkpoint(self, col: Collector, f: File, r: FdRef) -> bool:
        st = os.fstat(r.local)
        if chrdev.user_device(r.link, st, col.opts.devices):
            why = chrdev.save(f, r, user=True)
            if why:
                self.problem(col, r, why)
            return not why
        holders = col.holders.get(f.objref, [r])  # complete: every task is in
        if not os.isatty(r.local) and all(h.fd > 2 for h in holders):
            self.problem(col, r, chrdev.refusal(r.link, st.st_rdev))
            return False
        f.kind = FileKind.TTY
        f.path = r.link
        f.st_rdev = st.st_rdev
        f.st_mode, f.st_uid, f.st_gid = st.st_mode, st.st_uid, st.st_gid
        f.extra = Tty()  # filled by collect(), once every task is known
        return True

    def collect(self, col: Collector) -> None:
        pids = [t.pid for t in col.image.tasks]
        for f in col.of_kind(FileKind.TTY):
            r = col.first[f.objref]
            st = os.fstat(r.local)
            f.extra = probe(r.local, st, pids)

    # ---- the image ----

    def write_file(self, w: Writer, image: Image, f: File, tag: int) -> None:
        t = extra(f, Tty)
        w.add(
            HdrType.TTY,
            tag,
            {"objref": f.objref, "flags": int(t.flags), "sid": t.sid, "pgrp": t.pgrp},
        )

    def read_file(self, p: Reader, image: Image, f: File, rec: Record) -> None:
        tf = p.child(rec, HdrType.TTY, "FILE of kind TTY").fields
        f.extra = Tty(flags=TtyFlag(tf["flags"]), sid=tf["sid"], pgrp=tf["pgrp"])

    def check_model(self, image: Image) -> None:
        for f in _ttys(image):
            extra(f, Tty)

    # ---- restart ----

    def check(self, files: list[File], plan: Plan) -> None:
        try:
            check_stdio(plan.opts.stdio)
        except ValueError as e:
            raise RestartError(str(e)) from None
        if not files:
            return
        if plan.opts.stdio == STDIO_AUTO:
            plan.opts.stdio = _auto_stdio(files, plan)
        image = plan.image
        top = set(_SLOT_OBJREFS)
        used = top & (image.files.keys() | pipes(image).keys())
        if used:
            raise RestartError(
                f"objrefs {sorted(used)}: reserved for the terminal's stdio at restart"
            )
        for f in files:
            extra(f, Tty)

    def restore(self, objs: Objects, files: list[File], plan: Plan) -> None:
        if not files:
            return
        by_ref = {f.objref: f for f in files}
        uses: dict[int, list[tuple[int, int, int]]] = {ref: [] for ref in by_ref}
        for task in plan.tasks:
            for d in task.fds:
                f = by_ref.get(d.objref)
                if f is not None:
                    uses[f.objref].append((task.pid, d.fd, slot(d.fd, f.f_flags)))
        slots = {s for u in uses.values() for _, _, s in u}
        src = stdio_sources(slots, plan.opts.stdio)
        for fd in set(src.values()):
            objs.keep(fd)
        fresh = list(_SLOT_OBJREFS)
        # file -> slot -> objref of its replacement there
        objects: dict[int, dict[int, int]] = {}
        for f in files:
            per_slot = objects.setdefault(f.objref, {})
            for pid, fd, s in uses[f.objref]:
                if s not in per_slot:
                    # the file's own objref for its first slot (epoll items
                    # and OBJREFs name it), a fresh one for each other slot
                    ref = fresh.pop(0) if per_slot else f.objref
                    if ref != f.objref and ref in plan.image.files:
                        raise RestartError(f"objref {ref}: reserved")
                    per_slot[s] = ref
                    objs.insert(ref, src[s])
                if per_slot[s] != f.objref:
                    plan.replace_fd(pid, fd, per_slot[s])
            if not per_slot:  # held by no fd (an epoll target only)
                per_slot[0] = f.objref
                objs.insert(f.objref, src.get(0) or objs.keep(_open_null()))
        objs.done()
        self._sessions(files, objects, src, plan)

    def _sessions(
        self,
        files: list[File],
        objects: dict[int, dict[int, int]],
        src: dict[int, int],
        plan: Plan,
    ) -> None:
        """Which stub takes which replacement as controlling terminal, and
        which one gives its group the foreground."""
        tasks = {t.pid: t for t in plan.tasks}
        for f in files:
            t = extra(f, Tty)
            if not t.flags & TtyFlag.CTTY:
                continue
            leader = tasks.get(t.sid)
            if leader is None or leader.sid != leader.pid:
                continue  # a shell job: the restarter's session is theirs
            where = f"session {t.sid} (terminal {f.path})"
            on_tty = [s for s in sorted(objects[f.objref]) if os.isatty(src[s])]
            if not on_tty:
                plan.warnings.append(
                    f"{where}: restarted without a controlling terminal: the "
                    "terminal's replacement is not a terminal"
                )
                continue
            if proc_tty(os.getpid()).tty_nr == os.fstat(src[on_tty[0]]).st_rdev:
                plan.warnings.append(
                    f"{where}: restarted without a controlling terminal: its "
                    "replacement is the restarter's own controlling terminal"
                )
                continue
            _sessions(plan).ctty[t.sid] = objects[f.objref][on_tty[0]]
            fg = tasks.get(t.pgrp)
            if fg is not None and fg.pgid == fg.pid and fg.sid == t.sid:
                _sessions(plan).foreground.add(fg.pid)

    # ---- restart, in the stubs ----

    def after_setsid(
        self,
        plan: Plan,
        task: Task,
        fetch: Callable[[int], int],
        report: Callable[[str], None],
    ) -> None:
        """A new session leader takes its terminal's replacement as
        controlling terminal.  A refusal is only reported."""
        ref = plan.extra.get(self.name, _NO_SESSIONS).ctty.get(task.pid)
        if ref is None:
            return
        fd = fetch(ref)
        try:
            why = take_ctty(fd)
        finally:
            os.close(fd)
        if why:
            report(f"session restarted without a controlling terminal: {why}")

    def at_release(self, plan: Plan, task: Task) -> None:
        """The group that had the terminal's foreground gets it back (every
        stub has set its group by then)."""
        if task.pid not in plan.extra.get(self.name, _NO_SESSIONS).foreground:
            return
        with contextlib.suppress(OSError):
            flags = os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK
            fd = os.open("/dev/tty", flags)
            try:
                set_foreground(fd, os.getpid())
            finally:
                os.close(fd)

    # ---- show ----

    def describe(self, f: File) -> str:
        t = f.extra if isinstance(f.extra, Tty) else Tty()
        what = kind_name(f.st_rdev, bool(t.flags & TtyFlag.TERMINAL))
        out = f"{what} {f.path} rdev {chrdev.rdev_name(f.st_rdev)}"
        if t.flags & TtyFlag.CTTY:
            out += f", controlling terminal of session {t.sid}"
            if t.pgrp:
                out += f" (foreground {t.pgrp})"
        return out

    def details(self, image: Image) -> list[str]:
        return [f"terminal {f.objref}: {self.describe(f)}" for f in _ttys(image)]


_NO_SESSIONS = _Sessions()
KIND = TtyKind()
