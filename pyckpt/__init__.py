"""pyckpt: Python control plane of the ckpt kernel module (/dev/ckpt).

pyckpt.checkpoint(pid, output) and pyckpt.restart(image) checkpoint and
restart a process tree's file-object graph; pyckpt.Image is the image;
pyckpt.Context is one kernel context, one method per ioctl.

The functions live in pyckpt.api; the machinery in pyckpt.checkpointer and
pyckpt.restarter, whose names cannot collide with the functions (a submodule
named like a package attribute is shadowed by it).
"""

from pyckpt.abi import DEVICE, DeferAction, FileKind, FMode, ObjType, Policy, State
from pyckpt.api import checkpoint, restart
from pyckpt.checkpointer import CheckpointResult, Options
from pyckpt.device import (
    Context,
    FileInfo,
    LookupResult,
    Stats,
    TestStat,
    kcmp_file,
    pidfd_getfd,
)
from pyckpt.errors import (
    CheckpointError,
    CkptError,
    DeviceMissingError,
    Error,
    ErrorEntry,
    ImageError,
    RestartError,
)
from pyckpt.image import Image
from pyckpt.restarter import Limits, Restarted

__all__ = [
    "DEVICE",
    "CheckpointError",
    "CheckpointResult",
    "CkptError",
    "Context",
    "DeferAction",
    "DeviceMissingError",
    "Error",
    "ErrorEntry",
    "FMode",
    "FileInfo",
    "FileKind",
    "Image",
    "ImageError",
    "Limits",
    "LookupResult",
    "ObjType",
    "Options",
    "Policy",
    "RestartError",
    "Restarted",
    "State",
    "Stats",
    "TestStat",
    "checkpoint",
    "kcmp_file",
    "pidfd_getfd",
    "restart",
]
