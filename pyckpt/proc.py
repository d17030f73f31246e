"""Reading /proc quickly: the checkpointer reads several files per fd while
the tree is frozen; ls and restart share the task-state reader."""

from __future__ import annotations

import os


def read(path: str) -> bytes:
    # raw syscalls: io.open() costs several times more
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # a seq_file read returns less than asked only at its end: most
        # files take one read(2), not two
        chunks = [os.read(fd, 65536)]
        while len(chunks[-1]) == 65536:
            chunks.append(os.read(fd, 65536))
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: str) -> str:
    return os.fsdecode(read(path))


def stat_fields(stat: bytes) -> list[bytes]:
    """state, ppid and the rest of /proc/PID/stat: comm may hold spaces and
    parentheses, so the fields follow the last ')'."""
    return stat[stat.rindex(b")") + 2 :].split(None, 2)


def state(pid: int) -> str:
    """The one-letter state of /proc/PID/stat ('' when the task is gone)."""
    try:
        return stat_fields(read(f"/proc/{pid}/stat"))[0].decode()
    except (OSError, ValueError, IndexError):
        return ""  # gone (or going: an empty read)


def starttime(pid: int) -> int:
    """Field 22 of /proc/PID/stat: when the task started, in clock ticks
    since boot; with the pid it names one task (a reused pid has another)."""
    # stat_fields(): state (3), ppid (4), then fields 5.. in one piece
    return int(stat_fields(read(f"/proc/{pid}/stat"))[2].split(None, 18)[17])


_AT_SECURE = 23  # <linux/auxvec.h>


def at_secure(pid: int) -> bool:
    """Whether the task's last exec was privileged (setuid, setgid, file
    capabilities, an LSM's say): AT_SECURE in its auxiliary vector, the
    flag the loader obeys by ignoring LD_PRELOAD and friends."""
    raw = read(f"/proc/{pid}/auxv")
    words = memoryview(raw)[: len(raw) // 16 * 16].cast("Q")
    for i in range(0, len(words), 2):
        if words[i] == _AT_SECURE:
            return bool(words[i + 1])
        if words[i] == 0:  # AT_NULL
            break
    return False


def label(pid: int) -> str:
    """The task's LSM label (/proc/PID/attr/current), '' when no LSM
    gives one (the read fails with EINVAL)."""
    try:
        raw = read(f"/proc/{pid}/attr/current")
    except OSError:
        return ""
    return os.fsdecode(raw.rstrip(b"\n\0"))
