"""The process tree under a pid, read from /proc and psutil: its members in
tree order, and what each task is (threads, zombie status, comm)."""

from __future__ import annotations

import errno as _errno
import os
import re

import psutil

from pyckpt.errors import CheckpointError
from pyckpt.model import Task
from pyckpt.proc import read as _read
from pyckpt.proc import read_text as _read_text
from pyckpt.proc import stat_fields as _stat_fields
from pyckpt.syscalls import kcmp_files


def zombie_status(pid: int) -> int | None:
    """A zombie's wait(2) status (/proc/PID/stat field 52, exit_code), or
    None: not a zombie (alive, or gone)."""
    try:
        fields = _read(f"/proc/{pid}/stat")
        rest = _stat_fields(fields)
    except (OSError, ValueError):
        return None
    if rest[0] != b"Z":
        return None
    # fields from the state on: state is field 3, exit_code field 52
    return int(rest[2].split()[52 - 5]) & 0xFFFF


def nr_threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def comm(pid: int) -> str:
    try:
        return _read_text(f"/proc/{pid}/comm").rstrip("\n")
    except OSError:
        return "?"


def root_process(pid: int) -> psutil.Process:
    if pid <= 0:
        raise CheckpointError(f"invalid pid {pid}")
    if pid == 1:
        raise CheckpointError("refusing to checkpoint pid 1 (init: the whole system)")
    try:
        status = _read_text(f"/proc/{pid}/status")
        tgid = int(re.search(r"^Tgid:\s*(\d+)", status, re.MULTILINE)[1])
        if tgid != pid:
            raise CheckpointError(f"pid {pid} is a thread of process {tgid}")
        return psutil.Process(pid)
    except (FileNotFoundError, ProcessLookupError, psutil.NoSuchProcess):
        raise CheckpointError(f"no process with pid {pid}") from None
    except psutil.AccessDenied:
        raise CheckpointError(f"pid {pid}: access denied") from None


def ppids() -> dict[int, int]:
    """pid -> ppid of every process, from one pass over /proc."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                out[int(name)] = int(_stat_fields(_read(f"/proc/{name}/stat"))[1])
            except OSError:
                continue  # exited meanwhile
    return out


class Lister:
    """Lists a tree, a parent before its children (by pid), as psutil
    Processes that are made once per pid (psutil guards signals against pid
    reuse with them)."""

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.procs: dict[int, psutil.Process] = {root.pid: root}
        self.ppid: dict[int, int] = {}  # of the last listing

    def list(self) -> list[psutil.Process]:
        # psutil's children(recursive=True) costs twice this one scan (it
        # makes a Process per child each time): this runs while frozen
        parents = ppids()
        if self.root.pid not in parents:
            raise CheckpointError(f"task {self.root.pid} exited")
        kids: dict[int, list[int]] = {}
        for pid, ppid in parents.items():
            kids.setdefault(ppid, []).append(pid)
        out = []
        stack = [self.root.pid]
        while stack:
            pid = stack.pop()
            p = self.procs.get(pid)
            if p is None:
                try:
                    p = self.procs[pid] = psutil.Process(pid)
                except psutil.NoSuchProcess:
                    continue  # exited since the scan, with its children
            out.append(p)
            stack.extend(sorted(kids.get(pid, ()), reverse=True))
        self.ppid = {p.pid: parents[p.pid] for p in out}
        return out


def ours() -> dict[int, str]:
    """The calling process and its ancestors: freezing one would deadlock."""
    me = psutil.Process()
    ours = {me.pid: "the calling process"}
    for p in me.parents():
        ours[p.pid] = f"an ancestor of the calling process ({p.name()})"
    return ours


def check_not_ours(procs: list[psutil.Process], ours: dict[int, str]) -> None:
    for p in procs:
        if p.pid in ours:
            raise CheckpointError(
                f"refusing to checkpoint tree {procs[0].pid}: it contains pid "
                f"{p.pid}, {ours[p.pid]}"
            )


def threads(task: Task) -> str:
    """Count the task's threads; a problem if one has an fd table of its own
    (unshare(CLONE_FILES) in a thread: /proc/PID/fd shows only the leader's)."""
    pid = task.pid
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError as e:
        return f"cannot list its threads: {why(e)}"
    task.nr_threads = len(tids)
    for tid in tids:
        if tid == pid:
            continue
        try:
            if kcmp_files(pid, tid) != 0:
                return (
                    f"its thread {tid} has an fd table of its own "
                    "(unshare(CLONE_FILES)): not supported"
                )
        except OSError as e:
            if e.errno != _errno.ESRCH:  # a thread that exited: it had none
                return f"thread {tid}: kcmp(KCMP_FILES): {why(e)}"
    return ""


def status_line(status: str, key: str) -> list[str]:
    """The fields of one line of /proc/PID/status."""
    m = re.search(rf"^{key}:[ \t]*(.*)$", status, re.MULTILINE)
    return m[1].split() if m else []


def why(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno in (_errno.EPERM, _errno.EACCES):
        return f"permission denied ({e})"
    if isinstance(e, OSError) and e.errno == _errno.ESRCH:
        return "the task exited"
    return str(e)
