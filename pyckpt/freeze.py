"""Freezing a tree and keeping it from staying frozen: the SIGSTOP and
cgroup v2 freezers (the cgroup one by default where it is usable), the
check that no task ran while the tree was collected, the watchdog process
that thaws the tree if the checkpointer dies, and the thaw on
SIGINT/SIGTERM/SIGHUP."""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import signal
import time
from collections.abc import Callable, Iterator

import psutil

from pyckpt import proctree
from pyckpt.errors import CheckpointError
from pyckpt.proc import ctxt_switches as _ctxt_switches
from pyckpt.proc import off_cpu as _off_cpu
from pyckpt.proc import read as _read
from pyckpt.proc import read_text as _read_text
from pyckpt.proc import stat_fields as _stat_fields
from pyckpt.proc import state as _proc_state

FREEZE_TIMEOUT = 5.0  # seconds for every task to stop / the cgroup to freeze


CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_unusable() -> str:
    """Why the cgroup v2 freezer cannot be used here ('' if it can)."""
    if not os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")):
        return f"no cgroup v2 hierarchy at {CGROUP_ROOT}"
    if not os.access(CGROUP_ROOT, os.W_OK):
        return f"{CGROUP_ROOT} is not writable"
    # cgroup.freeze (Linux 5.2) is in every cgroup but the root one
    with contextlib.suppress(OSError, StopIteration):
        sub = next(e for e in os.scandir(CGROUP_ROOT) if e.is_dir())
        if not os.path.exists(os.path.join(sub.path, "cgroup.freeze")):
            return "the kernel's cgroup v2 has no freezer (cgroup.freeze)"
    return ""


def threads_stopped(pid: int) -> bool:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True  # gone: the caller sees it in the leader's state
    for tid in tids:
        try:
            st = _stat_fields(_read(f"/proc/{pid}/task/{tid}/stat"))[0]
        except (OSError, ValueError):
            continue  # this thread exited
        if st not in (b"T", b"t", b"Z", b"X"):
            return False
    return True


def _tids(pid: int) -> list[int]:
    """A task's threads but those exiting (Z/X: they run no more code, and
    are gone soon)."""
    out = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            st = _stat_fields(_read(f"/proc/{pid}/task/{t}/stat"))[0]
        except (OSError, ValueError):
            continue  # gone
        if st not in (b"Z", b"X"):
            out.append(int(t))
    return sorted(out)


def _settled(pid: int, tid: int) -> bool:
    """A stopped thread is off its CPU; one that is not stopped (continued
    since the freeze) raises: it runs."""
    st = _stat_fields(_read(f"/proc/{pid}/task/{tid}/stat"))[0]
    if st not in (b"T", b"t"):
        raise CheckpointError(
            f"task {pid} ran during the freeze ({proctree.comm(pid)}: thread "
            f"{tid} runs: SIGCONT from outside?): checkpoint refused, nothing written"
        )
    return _off_cpu(pid, tid)


def wait_until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + FREEZE_TIMEOUT
    delay = 0.0005
    while not cond():
        if time.monotonic() > deadline:
            raise CheckpointError(f"timed out after {FREEZE_TIMEOUT:g} s: {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


class Freezer:
    """Stops a tree and puts it back as it was found."""

    def __init__(
        self, root: psutil.Process, ours: dict[int, str], watchdog: Watchdog
    ) -> None:
        self.root = root
        self.ours = ours
        self.lister = proctree.Lister(root)
        self.procs: list[psutil.Process] = []
        self.watchdog = watchdog
        self.zombies: dict[int, int] = {}  # pid -> wait status: never frozen
        self.marks: dict[int, dict[int, int]] = {}  # by mark(): pid -> tid -> count

    def freeze(self) -> list[psutil.Process]:
        """Freeze the tree, re-listing until no task appears: the final tree."""
        seen: set[int] = set()
        while True:
            procs = self.lister.list()
            proctree.check_not_ours(procs, self.ours)
            new = [p for p in procs if p.pid not in seen]
            if not new:
                self.procs = procs
                self.mark()
                return procs
            seen.update(p.pid for p in new)
            self.procs = procs
            live = []
            for p in new:
                state = _proc_state(p.pid)
                if state in ("X", ""):
                    raise CheckpointError(f"task {p.pid} exited during the freeze")
                if state != "Z":
                    live.append(p)
                    continue
                if proctree.nr_threads(p.pid) > 1:
                    # the leader thread exited, the others run on: /proc
                    # shows no fd table for it
                    raise CheckpointError(
                        f"task {p.pid} ({proctree.comm(p.pid)}): its main thread exited "
                        "while other threads run: not supported"
                    )
                if p.pid == self.root.pid:
                    raise CheckpointError(
                        f"task {p.pid} ({proctree.comm(p.pid)}) has exited (a zombie its "
                        "parent did not reap): the tree's root cannot be one"
                    )
                status = proctree.zombie_status(p.pid)
                if status is None:
                    raise CheckpointError(f"task {p.pid} exited during the freeze")
                # a zombie runs no more: nothing to freeze, and its parent,
                # frozen, cannot reap it before the thaw
                self.zombies[p.pid] = status
            self._freeze_new(live)

    def _freeze_new(self, new: list[psutil.Process]) -> None:
        raise NotImplementedError

    def thaw(self) -> None:
        raise NotImplementedError

    # ---- did a task run while the tree was collected? ----

    def live(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid not in self.zombies]

    def mark(self) -> None:
        """Once every task is frozen: note what verify() compares."""
        self.marks = {pid: self._threads(pid) for pid in self.live()}

    def _threads(self, pid: int) -> dict[int, int]:
        """Each thread of a task -> what tells whether it ran (here nothing:
        the freezers that can tell say how)."""
        return dict.fromkeys(_tids(pid), 0)

    def ran(self) -> str:
        """Which task ran since mark(), as a refusal ('' if none did):
        someone outside the tree continued it, or it died."""
        for pid, before in self.marks.items():
            try:
                why = self._ran(pid, before)
            except (OSError, ValueError):
                why = "exited"
            if why:
                return (
                    f"task {pid} ran during collection ({proctree.comm(pid)}: "
                    f"{why}): checkpoint refused, nothing written"
                )
        return ""

    def _ran(self, pid: int, before: dict[int, int]) -> str:
        if _proc_state(pid) in ("", "Z", "X"):
            return "it exited: SIGKILL from outside?"
        now = set(_tids(pid))
        if now - before.keys():
            return f"it started thread {min(now - before.keys())}"
        if before.keys() - now:
            return f"its thread {min(before.keys() - now)} exited"
        return ""

    def verify(self) -> None:
        """Refuse the checkpoint if a task ran since the tree was frozen."""
        why = self.ran()
        if why:
            raise CheckpointError(why)

    def kill(self) -> None:
        """SIGKILL every task while frozen, undo the freezer, wait for the deaths."""
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
        self._undo_after_kill()
        pids = [p.pid for p in self.procs]
        wait_until(
            lambda: all(_proc_state(pid) in ("", "Z", "X") for pid in pids),
            "killed tasks to exit",
        )

    def _undo_after_kill(self) -> None:
        pass


class SignalFreezer(Freezer):
    """SIGSTOP every task; SIGCONT only those we stopped."""

    def __init__(
        self, root: psutil.Process, ours: dict[int, str], watchdog: Watchdog
    ) -> None:
        super().__init__(root, ours, watchdog)
        self.stopped: list[psutil.Process] = []  # by us, so ours to continue

    def _freeze_new(self, new: list[psutil.Process]) -> None:
        waiting = []
        for p in new:
            state = _proc_state(p.pid)
            if state in ("T", "t"):
                continue  # already stopped: left stopped at thaw
            self.watchdog.note(f"stop {p.pid}")  # first: it may outlive us
            try:
                p.suspend()
            except psutil.NoSuchProcess:
                raise CheckpointError(
                    f"task {p.pid} exited during the freeze"
                ) from None
            except psutil.AccessDenied:
                raise CheckpointError(
                    f"task {p.pid} ({proctree.comm(p.pid)}): not allowed to stop it"
                ) from None
            self.stopped.append(p)
            waiting.append(p.pid)

        def all_stopped() -> bool:
            states = {pid: _proc_state(pid) for pid in waiting}
            gone = [pid for pid, s in states.items() if s in ("", "Z", "X")]
            if gone:
                raise CheckpointError(f"task {gone[0]} exited during the freeze")
            # every thread, not only the leader: a thread still running
            # could change the fd table while it is read
            return all(s in ("T", "t") for s in states.values()) and all(
                threads_stopped(pid) for pid in waiting
            )

        wait_until(all_stopped, f"tasks {waiting} to stop")

    def thaw(self) -> None:
        for p in self.stopped:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.resume()
        self.stopped = []

    # The owner of a task (and root) can SIGCONT it, and SIGSTOP it again:
    # nothing keeps a stopped tree stopped.  A stopped thread's context
    # switch count does not move until it runs again, so the counts, read
    # once every thread has left its CPU and again after the collection,
    # tell whether one ran; a thread that is not stopped runs now.

    def mark(self) -> None:
        try:
            super().mark()
        except (OSError, ValueError):
            raise CheckpointError("a task exited during the freeze") from None

    def _threads(self, pid: int) -> dict[int, int]:
        counts = {}
        for tid in _tids(pid):
            wait_until(
                lambda tid=tid: _settled(pid, tid), f"task {pid} thread {tid} to stop"
            )
            counts[tid] = _ctxt_switches(pid, tid)
        return counts

    def _ran(self, pid: int, before: dict[int, int]) -> str:
        why = super()._ran(pid, before)
        if why:
            return why
        for tid, n in before.items():
            st = _stat_fields(_read(f"/proc/{pid}/task/{tid}/stat"))[0]
            if st not in (b"T", b"t"):
                return f"thread {tid} runs: SIGCONT from outside?"
            if _ctxt_switches(pid, tid) != n:
                return f"thread {tid} was continued and stopped again: SIGCONT from outside?"
        return ""


class CgroupFreezer(Freezer):
    """The cgroup v2 freezer, in a cgroup of our own that is removed at thaw."""

    def __init__(
        self, root: psutil.Process, ours: dict[int, str], watchdog: Watchdog
    ) -> None:
        super().__init__(root, ours, watchdog)
        why = cgroup_unusable()
        if why:
            raise CheckpointError(f"the cgroup freezer cannot be used: {why}")
        self.path = ""
        self.origin: dict[int, str] = {}  # pid -> its cgroup before the move
        self.frozen = False

    def _write(self, name: str, value: str, cgroup: str | None = None) -> None:
        with open(os.path.join(cgroup or self.path, name), "w") as f:
            f.write(value)

    def _freeze_new(self, new: list[psutil.Process]) -> None:
        if not self.path:
            path = f"{CGROUP_ROOT}/pyckpt-{self.root.pid}-{os.urandom(4).hex()}"
            self.watchdog.note(f"cgroup {path}")
            try:
                os.mkdir(path)
            except OSError as e:
                raise CheckpointError(f"cannot create cgroup {path}: {e}") from e
            self.path = path
        for p in new:
            try:
                where = _cgroup_of(p.pid)
                if CGROUP_ROOT + where == self.path:
                    # forked during the freeze inside our cgroup: it goes
                    # back where its parent came from
                    ppid = self.lister.ppid.get(p.pid, 0)
                    where = self.origin.get(ppid, where)
                self.origin[p.pid] = where
                self.watchdog.note(f"origin {p.pid} {where}")
                self._write("cgroup.procs", str(p.pid))
            except (ProcessLookupError, FileNotFoundError):
                raise CheckpointError(
                    f"task {p.pid} exited during the freeze"
                ) from None
            except (OSError, ValueError) as e:
                raise CheckpointError(
                    f"cannot move task {p.pid} ({proctree.comm(p.pid)}) into "
                    f"{self.path}: {e} (--freezer signal freezes without cgroups)"
                ) from e
        if not self.frozen:
            self._write("cgroup.freeze", "1")
            self.frozen = True
        wait_until(self._is_frozen, f"{self.path} to freeze")

    def _is_frozen(self) -> bool:
        events = _read_text(os.path.join(self.path, "cgroup.events")).split("\n")
        return "frozen 1" in events

    # A task in a frozen cgroup does not return to user space until the
    # cgroup is thawed or the task leaves it, and neither the tree's owner
    # nor its signals can do either (the cgroup is root's, at the top of the
    # hierarchy): the check is that both held.  Context switches would not
    # tell: a frozen task wakes in the kernel for every signal sent to it,
    # and sleeps again without running its code.

    def _ran(self, pid: int, before: dict[int, int]) -> str:
        why = super()._ran(pid, before)
        if why:
            return why
        if not self._is_frozen():
            return f"{self.path} was thawed"
        where = _cgroup_of(pid)
        if CGROUP_ROOT + where != self.path:
            return f"it was moved to cgroup {where}"
        return ""

    def _undo(self) -> None:
        problems = []
        # home first, while frozen: a task leaving a frozen cgroup for a
        # thawed one runs there, so that whatever it forks is born at home
        # (thawed first, it forked into ours, outside the tree's limits)
        for pid, where in self.origin.items():
            try:
                self._write("cgroup.procs", str(pid), CGROUP_ROOT + where)
            except ProcessLookupError:
                pass  # gone (killed): nothing to move back
            except OSError as e:
                problems.append(f"move task {pid} back to {where}: {e}")
        if self.path:
            problems += self._send_stragglers_home()
        self.origin = {}
        if self.frozen:
            # what could not be moved home runs again where it is
            try:
                self._write("cgroup.freeze", "0")
                self.frozen = False
            except OSError as e:
                problems.append(f"unfreeze {self.path}: {e}")
        if self.path:
            try:
                self._rmdir()
                self.path = ""
            except OSError as e:
                problems.append(f"rmdir {self.path}: {e}")
        if problems:
            raise CheckpointError("cannot undo the cgroup freezer", problems)

    def _send_stragglers_home(self) -> list[str]:
        """Tasks in our cgroup we did not move in (none should be: only
        root can put one there): each goes where its nearest ancestor that
        we moved came from."""
        problems = []
        try:
            left = [
                int(x) for x in _read(os.path.join(self.path, "cgroup.procs")).split()
            ]
        except OSError as e:
            return [f"read {self.path}/cgroup.procs: {e}"]
        parents = proctree.ppids() if left else {}
        for pid in left:
            up = pid
            while up > 1 and up not in self.origin:
                up = parents.get(up, 0)
            where = self.origin.get(up) or self.origin.get(self.root.pid)
            if where is None:
                problems.append(f"task {pid} is left in {self.path}")
                continue
            try:
                self._write("cgroup.procs", str(pid), CGROUP_ROOT + where)
            except ProcessLookupError:
                pass
            except OSError as e:
                problems.append(f"move task {pid} to {where}: {e}")
        return problems

    def _rmdir(self) -> None:
        # dying tasks may keep the cgroup busy for a moment
        deadline = time.monotonic() + FREEZE_TIMEOUT
        while True:
            try:
                os.rmdir(self.path)
                return
            except OSError as e:
                if e.errno != _errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def thaw(self) -> None:
        self._undo()

    def _undo_after_kill(self) -> None:
        self._undo()


def _cgroup_of(pid: int) -> str:
    """A task's cgroup v2 path (ValueError if it has none)."""
    lines = _read_text(f"/proc/{pid}/cgroup").splitlines()
    (where,) = [ln[3:] for ln in lines if ln.startswith("0::")]
    return where


class Watchdog:
    """A process forked before the freeze that thaws the tree if the
    coordinator dies without saying "done" (SIGKILL included): it learns
    what is frozen through a pipe, line by line, before it is frozen, and
    reads end-of-file when the coordinator is gone."""

    def __init__(self) -> None:
        self.wfd = -1
        self.pid = 0

    def start(self) -> None:
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            try:
                watchdog_main(rfd)
            finally:
                os._exit(0)
        os.close(rfd)
        self.wfd, self.pid = wfd, pid

    def note(self, line: str) -> None:
        if self.wfd >= 0:
            os.write(self.wfd, (line + "\n").encode())  # < PIPE_BUF: atomic

    def done(self, undone: bool = True) -> None:
        """undone: the coordinator undid the freeze itself, the watchdog just
        exits; else it undoes what it was told of, now, and exits."""
        if self.wfd < 0:
            return
        if undone:
            with contextlib.suppress(OSError):
                os.write(self.wfd, b"done\n")
        os.close(self.wfd)
        self.wfd = -1
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def watchdog_main(rfd: int) -> None:
    """The watchdog: never returns into the caller's code (os._exit)."""
    import gc

    gc.disable()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.setsid()  # out of the caller's process group and terminal
    for name in os.listdir("/proc/self/fd"):
        if int(name) != rfd:
            with contextlib.suppress(OSError):
                os.close(int(name))
    pidfds: list[int] = []
    cgroup = ""
    origin: dict[int, str] = {}
    buf = b""
    while True:
        try:
            chunk = os.read(rfd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            word, _, rest = raw.decode().partition(" ")
            if word == "done":
                os._exit(0)
            with contextlib.suppress(OSError, ValueError):
                if word == "stop":
                    pidfds.append(os.pidfd_open(int(rest)))
                elif word == "cgroup":
                    cgroup = rest
                elif word == "origin":
                    pid, _, where = rest.partition(" ")
                    origin[int(pid)] = where
    # the coordinator died with the tree frozen: undo what it did
    for pidfd in pidfds:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(pidfd, signal.SIGCONT)
    if cgroup:
        # home first (a task leaving a frozen cgroup for a thawed one runs),
        # then thaw whatever could not be moved
        for pid, where in origin.items():
            with (
                contextlib.suppress(OSError),
                open(CGROUP_ROOT + where + "/cgroup.procs", "w") as f,
            ):
                f.write(str(pid))
        with (
            contextlib.suppress(OSError),
            open(os.path.join(cgroup, "cgroup.freeze"), "w") as f,
        ):
            f.write("0")
        for _ in range(100):
            try:
                os.rmdir(cgroup)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)
    os._exit(0)


FREEZER_CLASSES: dict[str, type[Freezer]] = {
    "signal": SignalFreezer,
    "cgroup": CgroupFreezer,
}
# "auto": the cgroup freezer where it is usable (its tasks' owner cannot
# thaw it), else the signal one (whose thaw by the owner the check refuses)
NAMES = ("auto", *FREEZER_CLASSES)


def freezer_class(name: str) -> type[Freezer]:
    """The freezer called name (ValueError if none is)."""
    if name == "auto":
        return SignalFreezer if cgroup_unusable() else CgroupFreezer
    try:
        return FREEZER_CLASSES[name]
    except KeyError:
        raise ValueError(
            f"unknown freezer {name!r} (one of {', '.join(NAMES)})"
        ) from None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Signalled(BaseException):
    """SIGINT/SIGTERM/SIGHUP while the tree was frozen."""

    def __init__(self, sig: int) -> None:
        super().__init__(sig)
        self.sig = sig


@contextlib.contextmanager
def thaw_on_signals() -> Iterator[Callable[[], None]]:
    """While the tree may be frozen, SIGINT/SIGTERM/SIGHUP raise Signalled
    (so the caller thaws before dying).  Yields block(): from then on those
    signals wait until the handlers are restored, so the undoing itself is
    never interrupted; a signal that came meanwhile is then delivered to the
    caller's own handler (the default ones end the process, as asked)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield lambda: None  # handlers can be set only from the main thread
        return

    def handler(sig: int, frame: object) -> None:
        raise Signalled(sig)

    old = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())

    def block() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    try:
        yield block
    finally:
        block()
        for sig, h in old.items():
            signal.signal(sig, h)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
