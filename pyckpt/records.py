"""The record codec: one record of an image, packed and unpacked through
cffi from the ``struct ckpt_hdr_*`` of ``ckpt.h`` (seed 003's
``ckpt_read_obj``/``ckpt_write_obj``).

``LAYOUTS`` says, per record type, which struct is its fixed part and which
variable parts follow it (each sized by a field of the struct and bounded by
a ``CKPT_*_MAX``); ``CHECKS`` holds each type's record-local check.  The
image's own records (HEAD, TREE, TASK, FD, FILE, OBJREF, ERROR, TAIL) are
registered by ``pyckpt.image``, every other type by the kind that owns it
(``pyckpt/kinds/``).  The grammar, what spans records, is image.py's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyckpt.abi import HdrType, ffi, lib
from pyckpt.errors import ImageError

HDR = "struct ckpt_hdr"
HDR_SIZE: int = ffi.sizeof(HDR)
ALIGN = 8  # every record's len is a multiple of 8


@dataclass(frozen=True)
class Var:
    """A variable part after a record's struct: ``count`` elements."""

    name: str  # its key in Record.fields
    count: str  # the struct field holding its length (bytes or items)
    bound: str  # the CKPT_*_MAX constant bounding that field
    item: str | None = None  # element struct for arrays; None: raw bytes

    @property
    def max(self) -> int:
        return int(getattr(lib, self.bound))

    @property
    def item_size(self) -> int:
        return ffi.sizeof(self.item) if self.item else 1


@dataclass(frozen=True)
class Layout:
    struct: str
    var: tuple[Var, ...] = ()

    @property
    def size(self) -> int:
        return ffi.sizeof(self.struct)

    @property
    def max_len(self) -> int:
        """The largest len a valid record of this type can declare."""
        return pad(self.size + sum(v.max * v.item_size for v in self.var))


LAYOUTS: dict[int, Layout] = {}
CHECKS: dict[int, Callable[[Record, str], None]] = {}


def register(
    rtype: HdrType, layout: Layout, check: Callable[[Record, str], None]
) -> None:
    """Give a record type its layout and its record-local check (once)."""
    if rtype in LAYOUTS:
        raise ImportError(f"record type {rtype.name} registered twice")
    LAYOUTS[rtype] = layout
    CHECKS[rtype] = check


def pad(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@functools.cache
def struct_fields(ctype: str) -> list[tuple[str, Any]]:
    """A struct's data fields (header ``h`` and ``__pad*`` left out)."""
    return [
        (name, f)
        for name, f in ffi.typeof(ctype).fields
        if name != "h" and not name.startswith("__")
    ]


@functools.cache
def pad_offsets(ctype: str) -> tuple[int, ...]:
    """Byte offsets of a struct that no data field covers: __pad fields,
    implicit holes and tail padding; all must be zero in an image."""
    covered: set[int] = set()

    def cover(t: Any, base: int) -> None:
        for name, f in t.fields:
            if name.startswith("__"):
                continue
            if f.type.kind == "struct":
                cover(f.type, base + f.offset)
            else:
                covered.update(
                    range(base + f.offset, base + f.offset + ffi.sizeof(f.type))
                )

    cover(ffi.typeof(ctype), 0)
    return tuple(i for i in range(ffi.sizeof(ctype)) if i not in covered)


def unpack(ctype: str, raw: bytes) -> Any:
    """A fresh ``ctype *`` holding a copy of ``raw`` (exactly its size)."""
    p = ffi.new(f"{ctype} *")
    ffi.memmove(p, raw, len(raw))
    return p


def decode_fields(ctype: str, p: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, f in struct_fields(ctype):
        if f.type.kind == "array" and f.type.item.kind == "struct":  # rlim[]
            out[name] = [
                {k: int(getattr(e, k)) for k, _ in f.type.item.fields}
                for e in getattr(p, name)
            ]
        elif f.type.kind == "array":  # char[] (uts names): the raw bytes
            out[name] = bytes(ffi.buffer(getattr(p, name)))
        else:
            out[name] = int(getattr(p, name))
    return out


def nonzero_pad(ctype: str, raw: bytes) -> bool:
    return any(raw[i] for i in pad_offsets(ctype))


@dataclass(frozen=True)
class Record:
    """One record as decoded by ``iter_records()``.

    ``fields`` has the struct's data fields by their ckpt.h names (padding
    left out) and the variable parts: ``comm``, ``argv`` (list of bytes),
    ``cwd``, ``path``, ``data``, ``msg`` as bytes, ``items`` as a list of
    dicts; HEAD's uts names are bytes without their NUL padding.
    """

    offset: int
    tag: int
    type: HdrType
    len: int
    ptag: int
    fields: dict[str, Any]

    @property
    def end(self) -> int:
        return self.offset + self.len


def bad(rec: Record, name: str, msg: str) -> ImageError:
    return ImageError(rec.offset, f"{name}: {msg}")


def no_nul(rec: Record, name: str, *keys: str) -> None:
    for key in keys:
        if b"\0" in rec.fields[key]:
            raise bad(rec, name, f"NUL inside {key}")


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def pack(
    rtype: HdrType, ptag: int, fields: dict[str, Any], var: dict[str, Any] | None = None
) -> bytes:
    """One record: its struct from ``fields``, then its variable parts (whose
    length fields are filled here), zero-padded to a multiple of 8."""
    lay = LAYOUTS[rtype]
    name = f"{rtype.name} record"
    parts = []
    try:
        p = ffi.new(f"{lay.struct} *")
        for v in lay.var:
            value = (var or {})[v.name]
            if v.item is None:
                count, raw = len(value), bytes(value)
            elif isinstance(value, (bytes, bytearray, memoryview)):  # packed items
                count, raw = len(value) // v.item_size, bytes(value)
            else:
                count = len(value)
                raw = bytes(ffi.buffer(ffi.new(f"{v.item}[]", value))) if value else b""
            if count > v.max:
                raise ValueError(
                    f"{v.name}: {v.count} {count} exceeds {v.bound} {v.max}"
                )
            fields[v.count] = count
            parts.append(raw)
        body = b"".join(parts)
        rlen = pad(lay.size + len(body))
        p.h.type, p.h.len, p.h.ptag = rtype, rlen, ptag
        for key, value in fields.items():
            setattr(p, key, value)
    except (OverflowError, TypeError, IndexError, ValueError) as e:
        raise ValueError(f"{name}: {e}") from None
    out = bytes(ffi.buffer(p)) + body
    return out + bytes(rlen - len(out))


def enc(s: str, what: str) -> bytes:
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what}: {e}") from None
