"""pyckpt: Python control plane of the ckpt kernel module (/dev/ckpt).

pyckpt.checkpoint(pid, output) and pyckpt.restart(image) checkpoint and
restart a process tree's file-object graph; pyckpt.Image is the image;
pyckpt.Context is one kernel context, one method per ioctl.

The functions checkpoint and restart shadow the submodules of the same names
as attributes of the package; `from pyckpt.checkpoint import ...` still
reaches the module.
"""

from pyckpt.abi import DEVICE, DeferAction, FileKind, FMode, ObjType, Policy, State
from pyckpt.api import checkpoint, restart
from pyckpt.checkpoint import CheckpointError, CheckpointResult
from pyckpt.device import (
    Context,
    FileInfo,
    LookupResult,
    Stats,
    TestStat,
    kcmp_file,
    pidfd_getfd,
)
from pyckpt.errors import CkptError, DeviceMissingError, ErrorEntry
from pyckpt.image import Image, ImageError
from pyckpt.restart import Restarted, RestartError

__all__ = [
    "DEVICE",
    "CheckpointError",
    "CheckpointResult",
    "CkptError",
    "Context",
    "DeferAction",
    "DeviceMissingError",
    "ErrorEntry",
    "FMode",
    "FileInfo",
    "FileKind",
    "Image",
    "ImageError",
    "LookupResult",
    "ObjType",
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
