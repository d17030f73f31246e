"""The ABI of /dev/ckpt as Python sees it, all read from the built extension.

Every value here comes from ``ckpt.h`` (the ioctl ABI) and ``ckpt_image.h``
(the image format) through cffi (enum elements and
``#define`` constants compiled by the C compiler); nothing is retyped.
"""

from __future__ import annotations

import enum

from pyckpt._ckpt import ffi, lib

__all__ = [
    "DEVICE",
    "IOCTLS",
    "DeferAction",
    "FMode",
    "FileKind",
    "HdrType",
    "ObjFlag",
    "ObjType",
    "Policy",
    "State",
    "ffi",
    "ioc",
    "ioc_dir",
    "ioc_nr",
    "ioc_size",
    "ioc_type",
    "ioctl_name",
    "lib",
    "struct_fields",
    "with_size",
]

DEVICE: str = ffi.string(lib.CKPT_DEVICE).decode()


def _int_enum(name: str, ctype: str, prefix: str, *more: str) -> type[enum.IntEnum]:
    """An IntEnum from C enums of the headers (one numbering), their prefix
    and *_MAX dropped."""
    relements = {}
    for ct in (ctype, *more):
        relements.update(ffi.typeof(ct).relements)
    elements = sorted(relements.items(), key=lambda kv: kv[1])
    members = {
        cname.removeprefix(prefix): value
        for cname, value in elements
        if not cname.endswith("_MAX")
    }
    return enum.IntEnum(name, members, module=__name__)


def _int_flag(name: str, prefix: str) -> type[enum.IntFlag]:
    """An IntFlag from the header's ``#define PREFIX*`` constants."""
    names = [cname for cname in dir(lib) if cname.startswith(prefix)]
    members = {
        cname.removeprefix(prefix): getattr(lib, cname)
        for cname in sorted(names, key=lambda n: getattr(lib, n))
    }
    return enum.IntFlag(name, members, module=__name__)


ObjType = _int_enum("ObjType", "enum ckpt_obj_type", "CKPT_OBJ_")
# what the module reports (ckpt.h) and the image's own kinds (ckpt_image.h)
FileKind = _int_enum(
    "FileKind", "enum ckpt_file_kind", "CKPT_FILE_", "enum ckpt_image_file_kind"
)
Policy = _int_enum("Policy", "enum ckpt_policy", "CKPT_POLICY_")
DeferAction = _int_enum("DeferAction", "enum ckpt_defer_action", "CKPT_DEFER_")
HdrType = _int_enum("HdrType", "enum ckpt_hdr_type", "CKPT_HDR_")
State = _int_flag("State", "CKPT_STATE_")
FMode = _int_flag("FMode", "CKPT_FMODE_")
# CKPT_OBJ_ also prefixes the object types and CKPT_OBJ_ARG_SIZE_VER0, so the
# two flags are named rather than collected by prefix.
ObjFlag = enum.IntFlag(
    "ObjFlag",
    {"FIRST": lib.CKPT_OBJ_FIRST, "CLOEXEC": lib.CKPT_OBJ_CLOEXEC},
    module=__name__,
)

# request number -> name, for every CKPT_IOC_* ioctl of the header
IOCTLS: dict[int, str] = {
    getattr(lib, name): name
    for name in dir(lib)
    if name.startswith("CKPT_IOC_") and name != "CKPT_IOC_MAGIC"
}


def ioctl_name(req: int) -> str:
    return IOCTLS.get(req, f"ioctl {req:#x}")


# ---- the ioctl number encoding of <asm/ioctl.h> -----------------------------


def ioc(direction: int, type_: int, nr: int, size: int) -> int:
    """_IOC(dir, type, nr, size): build a request number by hand."""
    if not 0 <= size <= lib._IOC_SIZEMASK:
        raise ValueError(f"ioctl size {size} does not fit")
    return (
        (direction << lib._IOC_DIRSHIFT)
        | (type_ << lib._IOC_TYPESHIFT)
        | (nr << lib._IOC_NRSHIFT)
        | (size << lib._IOC_SIZESHIFT)
    )


def ioc_dir(req: int) -> int:
    return (req >> lib._IOC_DIRSHIFT) & lib._IOC_DIRMASK


def ioc_type(req: int) -> int:
    return (req >> lib._IOC_TYPESHIFT) & lib._IOC_TYPEMASK


def ioc_nr(req: int) -> int:
    return (req >> lib._IOC_NRSHIFT) & lib._IOC_NRMASK


def ioc_size(req: int) -> int:
    return (req >> lib._IOC_SIZESHIFT) & lib._IOC_SIZEMASK


def with_size(req: int, size: int) -> int:
    """The same request with another argument size (a shorter or grown struct)."""
    return ioc(ioc_dir(req), ioc_type(req), ioc_nr(req), size)


def struct_fields(ctype: str) -> list[str]:
    """Field names of a header struct, in order, padding (``__pad``) left out."""
    return [name for name, _ in ffi.typeof(ctype).fields if not name.startswith("__")]
