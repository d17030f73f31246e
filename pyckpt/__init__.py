"""pyckpt: Python control plane of the ckpt kernel module (/dev/ckpt)."""

from pyckpt.abi import DEVICE, DeferAction, FileKind, FMode, ObjType, Policy, State
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

__all__ = [
    "DEVICE",
    "CkptError",
    "Context",
    "DeferAction",
    "DeviceMissingError",
    "ErrorEntry",
    "FMode",
    "FileInfo",
    "FileKind",
    "LookupResult",
    "ObjType",
    "Policy",
    "State",
    "Stats",
    "TestStat",
    "kcmp_file",
    "pidfd_getfd",
]
