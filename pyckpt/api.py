"""The documented entry points: pyckpt.checkpoint() and pyckpt.restart().

They add file handling to pyckpt.checkpointer.checkpoint (which buffers the
image in memory) and pyckpt.restarter.restart (which takes an Image).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from pyckpt import gcpause
from pyckpt.abi import Policy
from pyckpt.checkpointer import CheckpointResult, Options
from pyckpt.checkpointer import checkpoint as _checkpoint
from pyckpt.image import Image
from pyckpt.kinds.chrdev import check_devices
from pyckpt.kinds.tty import STDIO_AUTO, check_stdio
from pyckpt.restarter import Limits, Restarted, RestartOptions
from pyckpt.restarter import restart as _restart

__all__ = ["checkpoint", "restart"]


def checkpoint(
    pid: int,
    output: str | os.PathLike[str] | None = None,
    *,
    freezer: str = "signal",
    allow_external: bool = False,
    kill: bool = False,
    options: Options | None = None,
    devices: Sequence[str] = (),
) -> CheckpointResult:
    """Checkpoint the process tree rooted at pid.

    The tree is frozen (SIGSTOP, or the cgroup v2 freezer with
    freezer="cgroup") only while its state is collected; the image is built
    in memory and, given output, written there atomically and durably
    (fsync): after the thaw, or with kill=True before the tree is killed (a
    write that fails thaws it instead; kill=True needs output).  Raises
    CheckpointError naming the task, fd and object at fault; the tree is
    left running (SIGINT/SIGTERM/SIGHUP and the caller's death included).
    options: what may be saved beyond the defaults (Options: e.g.
    contents_limit, the bytes of one memfd or deleted file).
    devices: character devices (absolute paths) to save as stateless ones,
    reopened by path at restart (ValueError if one is not a character
    device); /dev/null, zero, full, random, urandom and tty always are.
    """
    check_devices(list(devices))
    opts = options or Options()
    if devices:
        opts = dataclasses.replace(opts, devices=[*opts.devices, *devices])
    if kill and output is None:
        raise ValueError(
            "kill=True needs an output: the tree is killed only "
            "once its image is on disk"
        )
    save = None if output is None else (lambda image: image.save(output))
    return _checkpoint(
        pid,
        freezer=freezer,
        allow_external=allow_external,
        kill=kill,
        save=save,
        options=opts,
    )


def restart(
    image: Image | str | os.PathLike[str],
    *,
    policy: Policy = Policy.CLEAR_EARLY,
    argv: list[str] | None = None,
    release: bool = True,
    trust: bool = False,
    relocate: bool = False,
    limits: Limits = Limits(),  # noqa: B008 (frozen: sharing it is safe)
    stdio: str = STDIO_AUTO,
    devices: Sequence[str] = (),
) -> Restarted:
    """Restart a checkpointed tree from an Image or an image file.

    An image file is refused unless only root or the caller could have
    written it (trust=True overrides); the whole image is then read and
    validated (ImageError otherwise).  Each object is created once and
    registered in the module's objhash by its objref; files reopened by path
    must still be the recorded ones (relocate=True lets device and inode
    differ); stub tasks mirror the tree, take exactly their recorded fd
    tables and credentials; the hash is cleared per policy and the tasks are
    released to exec their recorded executable, argv and environment (or
    argv).  Memory and registers are not restored.  With release=False the
    tasks wait at the barrier until Restarted.release().

    The tree's terminal (a tty, or a character device on fds 0-2) is never
    reopened: its fds get the caller's own fds 0-2 ("inherit"), /dev/null
    ("null") or a regular file ("/path", created 0600, appended; input from
    /dev/null); "auto", the default, is "inherit" when every task holding
    the terminal is the caller's user and "null" otherwise (a warning says
    so: root's terminal is not given to another user's tasks).  devices: the character devices named with
    devices= at checkpoint that may be reopened (ValueError for a bad
    stdio or device, before anything is read).
    """
    check_stdio(stdio)
    check_devices(list(devices))
    if not isinstance(image, Image):
        with gcpause.paused():  # 10^4 records and more, as objects
            image = Image.load(image, trust=trust)
    return _restart(
        image,
        policy=policy,
        argv=argv,
        release=release,
        relocate=relocate,
        limits=limits,
        options=RestartOptions(stdio=stdio, devices=list(devices)),
    )
