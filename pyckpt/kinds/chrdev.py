"""Stateless character devices: /dev/null, zero, full, random, urandom, tty.

Such a device keeps nothing per open file that a restart must carry over
(reading /dev/zero gives zeros whatever came before), so it is saved as its
path and device number (FILE kind CHR, ``st_rdev``) and reopened by path.
A character device the user names with ``--device PATH`` at checkpoint is
saved the same way (``CKPT_FILE_USER_DEVICE``); restart reopens it only when
the restarting user names it again with ``--device PATH``: an image alone
never opens a device the restarting user did not choose.

Reopening checks first (``O_PATH|O_NOFOLLOW``, no driver's open runs): a
character device, at the recorded path, with the recorded device number;
only then the real open, non-blocking and without acquiring a controlling
terminal (``O_NOCTTY``).  ``/dev/tty`` opens the restarter's own controlling
terminal (ENXIO without one): the user's own terminal, never another.
"""

from __future__ import annotations

import fcntl
import functools
import os
import stat
from dataclasses import dataclass

from pyckpt.abi import FileKind, lib
from pyckpt.errors import RestartError
from pyckpt.kinds.base import (
    Collector,
    FdRef,
    Kind,
    Objects,
    Plan,
    Reader,
    by_holder,
)
from pyckpt.model import File, Image
from pyckpt.records import Record

# path -> (major, minor): what devices.txt fixes for them
STATELESS: dict[str, tuple[int, int]] = {
    "/dev/null": (1, 3),
    "/dev/zero": (1, 5),
    "/dev/full": (1, 7),
    "/dev/random": (1, 8),
    "/dev/urandom": (1, 9),
    "/dev/tty": (5, 0),
}

# creation flags: a device is never created or truncated; O_NOCTTY always
_OPEN_DROP = os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOFOLLOW
_SETFL = os.O_APPEND | os.O_NONBLOCK | os.O_ASYNC | os.O_NOATIME


def rdev_name(rdev: int) -> str:
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def is_stateless(path: str, rdev: int) -> bool:
    """One of the built-in devices, at its usual path with its usual number."""
    want = STATELESS.get(path)
    return want is not None and want == (os.major(rdev), os.minor(rdev))


def refusal(path: str, rdev: int) -> str:
    """Why checkpoint refuses a character device (the caller names task/fd)."""
    return (
        f"character device {path} (rdev {rdev_name(rdev)}): not a terminal on "
        "fds 0-2 nor a stateless device (null, zero, full, random, urandom, "
        "tty); --device PATH saves it as one"
    )


def user_device(path: str, st: os.stat_result, devices: list[str]) -> bool:
    """Is path one of the --device paths the user named, and a char device?"""
    return stat.S_ISCHR(st.st_mode) and os.path.normpath(path) in {
        os.path.normpath(d) for d in devices
    }


def check_devices(devices: list[str]) -> None:
    """ValueError unless every --device PATH is an absolute path to a
    character device (checked when the option is given, before anything)."""
    for d in devices:
        if not d.startswith("/"):
            raise ValueError(f"--device {d}: not an absolute path")
        try:
            st = os.stat(d, follow_symlinks=False)
        except OSError as e:
            raise ValueError(f"--device {d}: {e.strerror}") from None
        if not stat.S_ISCHR(st.st_mode):
            raise ValueError(f"--device {d}: not a character device")


def reopen(objref: int, path: str, rdev: int, f_flags: int) -> int:
    """A new close-on-exec fd on the device path, or RestartError: opened
    O_PATH first (no symlink followed, no driver's open), checked to be a
    character device with the recorded number, then opened for real."""
    where = f"objref {objref}: {path}"
    try:
        pfd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise RestartError(f"{where}: cannot reopen: {e.strerror}", e.errno) from e
    try:
        st = os.fstat(pfd)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != rdev:
            what = (
                f"rdev {rdev_name(st.st_rdev)}"
                if stat.S_ISCHR(st.st_mode)
                else "not a character device"
            )
            raise RestartError(
                f"{where}: not the device that was checkpointed ({what}, "
                f"recorded rdev {rdev_name(rdev)})"
            )
        flags = (f_flags & ~_OPEN_DROP) | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        try:
            fd = os.open(f"/proc/self/fd/{pfd}", flags)
        except OSError as e:
            raise RestartError(f"{where}: cannot reopen: {e.strerror}", e.errno) from e
    finally:
        os.close(pfd)
    fcntl.fcntl(fd, fcntl.F_SETFL, f_flags & _SETFL)
    return fd


def _reopen_all(objs: Objects, files: list[File], plan: Plan) -> None:
    for f in files:
        try:
            fd = objs.keep(reopen(f.objref, f.path, f.st_rdev, f.f_flags))
        except RestartError as e:
            raise RestartError(
                f"{plan.where(f.objref)}: {e} (reopened with the rights of uid "
                f"{os.geteuid()}, its holder's)",
                e.errno,
            ) from e
        objs.insert(f.objref, fd)
        objs.done()


# ---- the kind ------------------------------------------------------------------


@dataclass
class Device:
    """A character device's state: only that the user named it (a device
    restart reopens by itself has none)."""

    user: bool = False  # named with --device at checkpoint


def named_by_user(f: File) -> bool:
    return isinstance(f.extra, Device) and f.extra.user


def save(f: File, r: FdRef, user: bool) -> str:
    """f as a stateless device at its path (the /proc link), if that path
    still names the same device; else why not (the caller refuses)."""
    st = r.stat
    path = r.link
    try:
        there = os.stat(path, follow_symlinks=False) if path.startswith("/") else None
    except OSError:
        there = None
    if there is None or not stat.S_ISCHR(there.st_mode) or there.st_rdev != st.st_rdev:
        return (
            f"character device {path} (rdev {rdev_name(st.st_rdev)}): not "
            "reachable at its path (another mount namespace or a removed node)"
        )
    f.kind = FileKind.CHR
    f.path = path
    f.st_rdev = st.st_rdev
    f.st_dev, f.st_ino, f.st_mode = there.st_dev, there.st_ino, there.st_mode
    f.st_uid, f.st_gid = there.st_uid, there.st_gid
    f.extra = Device(user=True) if user else None
    return ""


class ChrdevKind(Kind):
    name = "chrdev"
    kinds = (FileKind.CHR,)
    reported = frozenset({FileKind.CHR})
    shared_outside = True  # reopened by path: nothing shared is lost
    file_flags = (("USER_DEVICE", lib.CKPT_FILE_USER_DEVICE),)

    def claims(self, kind: FileKind, r: FdRef) -> bool:
        # any other character device is the terminal kind's (tty.py): a
        # terminal, a console on fds 0-2, a --device or a refusal
        return is_stateless(r.link, r.stat.st_rdev)

    def checkpoint(self, col: Collector, f: File, r: FdRef) -> bool:
        why = save(f, r, user=False)
        if why:
            self.problem(col, r, why)
        return not why

    # ---- the image: whether the user named it is a FILE flag ----

    def file_fields(self, f: File) -> dict[str, int]:
        return {"flags": lib.CKPT_FILE_USER_DEVICE} if named_by_user(f) else {}

    def read_file(self, p: Reader, image: Image, f: File, rec: Record) -> None:
        if rec.fields["flags"] & lib.CKPT_FILE_USER_DEVICE:
            f.extra = Device(user=True)

    # ---- restart ----

    def check(self, files: list[File], plan: Plan) -> None:
        named = {os.path.normpath(d) for d in plan.opts.devices}
        for f in files:
            where = f"objref {f.objref}: {f.path}"
            if not f.path.startswith("/"):
                raise RestartError(f"objref {f.objref}: no absolute path ({f.path!r})")
            if named_by_user(f):
                if os.path.normpath(f.path) not in named:
                    raise RestartError(
                        f"{where} (rdev {rdev_name(f.st_rdev)}): a device named "
                        "with --device at checkpoint is reopened only when "
                        "restart is given --device " + f.path + " too"
                    )
            elif not is_stateless(f.path, f.st_rdev):
                raise RestartError(
                    f"{where} (rdev {rdev_name(f.st_rdev)}): not one of the "
                    "stateless devices restart reopens"
                )

    def restore(self, objs: Objects, files: list[File], plan: Plan) -> None:
        # the device node is walked and opened with its holder's rights: a
        # device the task's user could not open is refused, not opened
        # for it by root
        for creds, group in by_holder(plan, files):
            objs.as_holder(
                creds, functools.partial(_reopen_all, files=group, plan=plan)
            )

    def describe(self, f: File) -> str:
        mark = " (--device)" if named_by_user(f) else ""
        return f"chr {f.path} rdev {rdev_name(f.st_rdev)}{mark}"


KIND = ChrdevKind()
