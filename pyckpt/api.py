"""The documented entry points: pyckpt.checkpoint() and pyckpt.restart().

They add file handling to pyckpt.checkpoint.checkpoint (which buffers the
image in memory) and pyckpt.restart.restart (which takes an Image).
"""

from __future__ import annotations

import os

from pyckpt.abi import Policy
from pyckpt.checkpointer import CheckpointResult
from pyckpt.checkpointer import checkpoint as _checkpoint
from pyckpt.image import Image
from pyckpt.restarter import Restarted
from pyckpt.restarter import restart as _restart

__all__ = ["checkpoint", "restart"]


def checkpoint(
    pid: int,
    output: str | os.PathLike[str] | None = None,
    *,
    freezer: str = "signal",
    allow_external: bool = False,
    kill: bool = False,
) -> CheckpointResult:
    """Checkpoint the process tree rooted at pid.

    The tree is frozen (SIGSTOP, or the cgroup v2 freezer with
    freezer="cgroup") only while its state is collected; the image is built
    in memory and, given output, written there after the thaw, atomically
    (a failed checkpoint writes nothing).  kill=True ends the tree after a
    successful checkpoint.  Raises CheckpointError naming the task, fd and
    object at fault.
    """
    res = _checkpoint(pid, freezer=freezer, allow_external=allow_external, kill=kill)
    if output is not None:
        res.image.save(output)
    return res


def restart(
    image: Image | str | os.PathLike[str],
    *,
    policy: Policy = Policy.CLEAR_EARLY,
    argv: list[str] | None = None,
    release: bool = True,
) -> Restarted:
    """Restart a checkpointed tree from an Image or an image file.

    The whole image is read and validated first (ImageError otherwise).
    Each object is created once and registered in the module's objhash by
    its objref; stub tasks mirror the tree and take exactly their recorded
    fd tables; the hash is cleared per policy and the tasks are released to
    exec argv (default: each its recorded argv).  Memory and registers are
    not restored.  With release=False the tasks wait at the barrier until
    Restarted.release().
    """
    if not isinstance(image, Image):
        image = Image.load(image)
    return _restart(image, policy=policy, argv=argv, release=release)
