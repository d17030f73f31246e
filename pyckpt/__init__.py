"""pyckpt: Python control plane of the ckpt kernel module (/dev/ckpt).

pyckpt.checkpoint(pid, output) and pyckpt.restart(image) checkpoint and
restart a process tree's file-object graph; pyckpt.Image is the image;
pyckpt.Context is one kernel context, one method per ioctl.

The functions live in pyckpt.api; the machinery in pyckpt.checkpointer and
pyckpt.restarter, whose names cannot collide with the functions (a submodule
named like a package attribute is shadowed by it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module defining it: imported on first use (PEP 562), so that
# `import pyckpt` and the CLI's start cost no more than the verb needs
_WHERE = {
    "pyckpt.abi": "DEVICE DeferAction FileKind FMode ObjType Policy State",
    "pyckpt.api": "checkpoint restart",
    "pyckpt.checkpointer": "CheckpointResult Options",
    "pyckpt.device": "Context FileInfo LookupResult Stats TestStat",
    "pyckpt.errors": "CheckpointError CkptError DeviceMissingError Error "
    "ErrorEntry ImageError RestartError",
    "pyckpt.image": "Image",
    "pyckpt.limits": "Limits",
    "pyckpt.restarter": "Restarted",
    "pyckpt.syscalls": "kcmp_file pidfd_getfd",
}
_MODULE = {name: mod for mod, names in _WHERE.items() for name in names.split()}


def __getattr__(name: str) -> Any:
    mod = _MODULE.get(name)
    if mod is None:
        raise AttributeError(f"module 'pyckpt' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from pyckpt.abi import DEVICE, DeferAction, FileKind, FMode, ObjType, Policy, State
    from pyckpt.api import checkpoint, restart
    from pyckpt.checkpointer import CheckpointResult, Options
    from pyckpt.device import (
        Context,
        FileInfo,
        LookupResult,
        Stats,
        TestStat,
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
    from pyckpt.limits import Limits
    from pyckpt.restarter import Restarted
    from pyckpt.syscalls import kcmp_file, pidfd_getfd

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
