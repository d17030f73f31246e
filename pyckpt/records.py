"""The record codec: one record of an image, packed and unpacked from the
``struct ckpt_hdr_*`` of ``ckpt.h`` (linux-cr's
``ckpt_read_obj``/``ckpt_write_obj``) through one precompiled
``struct.Struct`` per struct (``Codec``), whose format is derived from cffi's
own offsets, sizes and signedness; the cffi field-by-field path
(``unpack``/``decode_fields``/``pack_slow``) is the reference it is tested
against.

``LAYOUTS`` says, per record type, which struct is its fixed part and which
variable parts follow it (each sized by a field of the struct and bounded by
a ``CKPT_*_MAX``); ``CHECKS`` holds each type's record-local check.  The
image's own records (HEAD, TREE, TASK, FD, FILE, OBJREF, ERROR, TAIL) are
registered by ``pyckpt.image``, every other type by the kind that owns it
(``pyckpt/kinds/``).  The grammar, what spans records, is image.py's.
"""

from __future__ import annotations

import functools
import struct
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

    @functools.cached_property
    def size(self) -> int:
        return ffi.sizeof(self.struct)

    @functools.cached_property
    def max_len(self) -> int:
        """The largest len a valid record of this type can declare."""
        return pad(self.size + sum(v.max * v.item_size for v in self.var))

    @functools.cached_property
    def codec(self) -> Codec:
        return codec(self.struct)


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


@dataclass(slots=True)
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
    length fields are filled here), zero-padded to a multiple of 8.

    Through the precompiled Codec; anything it cannot pack as given (a value
    out of range, of another type, a string too long for its array) goes
    through ``pack_slow``, which raises cffi's own ValueError for it."""
    lay = LAYOUTS[rtype]
    c = lay.codec
    if not lay.var and not c.bytes_fields and not lay.size % ALIGN:
        # a fixed record of numbers only (FD, OBJREF...): one Struct.pack
        try:
            return c.encode(fields, (rtype, lay.size, ptag))
        except (struct.error, TypeError, AttributeError):
            return pack_slow(rtype, ptag, fields, var)
    try:
        parts = []
        for v in lay.var:
            value = (var or {})[v.name]
            if v.item is None:
                count, raw = len(value), bytes(value)
            elif isinstance(value, (bytes, bytearray, memoryview)):  # packed items
                count, raw = len(value) // v.item_size, bytes(value)
            elif v.item.startswith("struct "):
                count = len(value)
                enc_item = codec(v.item).encode
                raw = b"".join(enc_item(it, ()) for it in value)
            else:
                count = len(value)
                raw = codec_array(v.item, count).pack(*value)
            if count > v.max:
                raise struct.error("bound")
            fields[v.count] = count
            parts.append(raw)
        body = b"".join(parts)
        rlen = pad(lay.size + len(body))
        for i in c.bytes_fields:
            name = c.leaves[i].path[0]
            if name in fields and len(fields[name]) > c.leaves[i].size:
                raise struct.error("too long")
        out = c.encode(fields, (rtype, rlen, ptag)) + body
    except (struct.error, TypeError, AttributeError):
        return pack_slow(rtype, ptag, fields, var)
    return out + bytes(rlen - len(out))


def packer(ctype: str) -> Callable[..., bytes | None]:
    """ctype's Struct.pack, every item in order (padding as bytes): None for
    a value that does not fit its field (pack() then says which)."""
    pack = codec(ctype).struct.pack

    def packed(*values: Any) -> bytes | None:
        try:
            return pack(*values)
        except struct.error:
            return None

    return packed


@functools.cache
def codec_array(item: str, n: int) -> struct.Struct:
    return struct.Struct("=" + _prim_fmt(ffi.typeof(item)) * n)


def pack_slow(
    rtype: HdrType, ptag: int, fields: dict[str, Any], var: dict[str, Any] | None = None
) -> bytes:
    """``pack`` field by field through cffi: the reference, and its errors."""
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


# ---- the fast codec: one precompiled struct.Struct per ckpt.h struct ----------
#
# ``unpack``/``decode_fields``/``nonzero_pad`` and ``pack_slow`` above go
# through cffi field by field (tens of microseconds a record); they stay as
# the reference the codec is tested against, and ``pack`` falls back to
# them for the exact error message when a value does not fit.  A Codec is
# derived from cffi's own offsets, sizes and signedness (ffi.typeof().fields),
# so ckpt.h stays the only truth: each leaf field one struct format item at
# its offset, every byte no data field covers one ``Ns`` item that must be
# zero (the same bytes as ``pad_offsets``).


@dataclass(frozen=True)
class Leaf:
    """One item of a Codec's format: a field at an offset, or padding."""

    offset: int
    size: int
    fmt: str  # struct format of the item ("I", "q", "65s", ...)
    path: tuple[str | int, ...]  # field names (and array indices); () for padding


def _prim_fmt(t: Any) -> str:
    size = ffi.sizeof(t)
    code = {1: "b", 2: "h", 4: "i", 8: "q"}[size]
    signed = int(ffi.cast(t, -1)) < 0
    return code if signed else code.upper()


def leaves(ctype: str) -> list[Leaf]:
    """The leaf fields of ctype in offset order, with its padding as Leafs
    of path () (every byte no data field covers; __pad fields included)."""
    out: list[Leaf] = []

    def walk(t: Any, base: int, path: tuple[str | int, ...]) -> None:
        for name, f in t.fields:
            if f.bitsize != -1:
                raise TypeError(f"{ctype}.{name}: bit fields are not supported")
            off = base + f.offset
            ft = f.type
            if name.startswith("__"):
                continue  # padding: found as a hole below
            if ft.kind == "struct":
                walk(ft, off, (*path, name))
            elif ft.kind == "array" and ft.item.kind == "struct":
                for i in range(ft.length):
                    walk(ft.item, off + i * ffi.sizeof(ft.item), (*path, name, i))
            elif ft.kind == "array":
                out.append(
                    Leaf(off, ffi.sizeof(ft), f"{ffi.sizeof(ft)}s", (*path, name))
                )
            elif ft.kind == "primitive":
                out.append(Leaf(off, ffi.sizeof(ft), _prim_fmt(ft), (*path, name)))
            else:
                raise TypeError(f"{ctype}.{name}: {ft.kind} fields are not supported")

    walk(ffi.typeof(ctype), 0, ())
    out.sort(key=lambda leaf: leaf.offset)
    full: list[Leaf] = []
    at = 0
    for leaf in out:
        if leaf.offset < at:
            raise TypeError(f"{ctype}: overlapping fields at {leaf.offset}")
        if leaf.offset > at:
            full.append(Leaf(at, leaf.offset - at, f"{leaf.offset - at}s", ()))
        full.append(leaf)
        at = leaf.offset + leaf.size
    size = ffi.sizeof(ctype)
    if at < size:
        full.append(Leaf(at, size - at, f"{size - at}s", ()))
    return full


class Codec:
    """A ckpt.h struct as one precompiled ``struct.Struct`` (native byte
    order, no alignment: every hole is an explicit pad item).

    ``decode(buf, offset)`` gives the fields as ``decode_fields`` does (the
    header ``h`` left out) and whether every padding byte is zero;
    ``encode(fields, hdr)`` packs them (absent fields 0, padding zero) and
    raises ``struct.error`` for a value that does not fit (``pack`` then
    asks ``pack_slow`` for cffi's own message).
    """

    def __init__(self, ctype: str) -> None:
        self.ctype = ctype
        self.leaves = leaves(ctype)
        self.struct = struct.Struct("=" + "".join(leaf.fmt for leaf in self.leaves))
        self.size = self.struct.size
        self.unpack_from = self.struct.unpack_from
        if self.size != ffi.sizeof(ctype):
            raise TypeError(f"{ctype}: codec size {self.size} != {ffi.sizeof(ctype)}")
        pads = [i for i, leaf in enumerate(self.leaves) if not leaf.path]
        self.pad_index = tuple(pads)
        self.bytes_fields = tuple(
            i
            for i, leaf in enumerate(self.leaves)
            if len(leaf.path) == 1 and leaf.fmt.endswith("s")
        )
        self.zeros = tuple(bytes(self.leaves[i].size) for i in pads)
        self.decode, self.encode = self._compile()

    def _compile(self) -> tuple[Any, Any]:
        """decode/encode as generated functions: no loop over fields at run
        time (a record costs one unpack_from and one dict display)."""
        top: dict[str, list[tuple[int, Leaf]]] = {}
        hdr: dict[str, int] = {}
        for i, leaf in enumerate(self.leaves):
            if not leaf.path:
                continue
            if leaf.path[0] == "h" and len(leaf.path) == 2:
                hdr[str(leaf.path[1])] = i
                continue
            top.setdefault(str(leaf.path[0]), []).append((i, leaf))
        dec: list[str] = []
        enc: list[str] = ["" for _ in self.leaves]
        for i, z in zip(self.pad_index, self.zeros):
            enc[i] = f"Z{i}"
        for name, idx in hdr.items():
            enc[idx] = f"hdr[{list(hdr).index(name)}]"
        arrays: dict[str, int] = {}
        for name, items in top.items():
            if len(items) == 1 and len(items[0][1].path) == 1:
                i, leaf = items[0]
                dec.append(f"{name!r}: v[{i}]")
                default = "b''" if leaf.fmt.endswith("s") else "0"
                enc[i] = f"f.get({name!r}, {default})"
                continue
            # an array of structs (rlim[]): a list of dicts, by index
            n = max(int(leaf.path[1]) for _, leaf in items) + 1
            arrays[name] = n
            elems: list[list[str]] = [[] for _ in range(n)]
            for i, leaf in items:
                k = int(leaf.path[1])
                elems[k].append(f"{leaf.path[2]!r}: v[{i}]")
                enc[i] = f"A_{name}[{k}].get({leaf.path[2]!r}, 0)"
            dec.append(
                f"{name!r}: ["
                + ", ".join("{" + ", ".join(e) + "}" for e in elems)
                + "]"
            )
        ns: dict[str, Any] = {"S": self.struct, "_arr": _arr}
        for i, z in zip(self.pad_index, self.zeros):
            ns[f"Z{i}"] = z
        pad_vals = ", ".join(f"v[{i}]" for i in self.pad_index)
        zero_vals = ", ".join(f"Z{i}" for i in self.pad_index)
        src = [
            "def decode(buf, offset):",
            "    v = S.unpack_from(buf, offset)",
            f"    return {{{', '.join(dec)}}}, ({pad_vals},) == ({zero_vals},)"
            if self.pad_index
            else f"    return {{{', '.join(dec)}}}, True",
            "def encode(f, hdr):",
        ]
        src += [
            f"    A_{name} = _arr(f.get({name!r}, ()), {n})"
            for name, n in arrays.items()
        ]
        src.append(f"    return S.pack({', '.join(enc)})")
        exec("\n".join(src), ns)  # noqa: S102 - generated from cffi's layout only
        return ns["decode"], ns["encode"]


def _arr(value: Any, n: int) -> list[Any]:
    """An array of structs to pack: at most n dicts, the rest zero (as cffi)."""
    value = list(value)
    if len(value) > n:
        raise struct.error(f"{len(value)} items for an array of {n}")
    return value + [{}] * (n - len(value))


@functools.cache
def codec(ctype: str) -> Codec:
    return Codec(ctype)


@functools.cache
def flat(
    ctype: str,
    skip: tuple[tuple[str | int, ...], ...] = (),
    only: tuple[tuple[str | int, ...], ...] | None = None,
) -> tuple[struct.Struct, dict[tuple[str | int, ...], int]]:
    """ctype as one precompiled Struct and the item index of each leaf field
    by its path (("file", "kind") for a nested struct): for arrays of a
    struct the module fills, decoded with one iter_unpack.  The fields in
    skip are pad bytes (no item, nothing made of them); their paths map to
    their byte offsets instead, for the caller to slice when it needs them.
    only: the fields to make items of, every other byte (padding too) is
    skipped, with no offsets."""
    left_out = set(skip)
    kept = None if only is None else set(only)
    fmt, at, index = "=", {}, 0
    for leaf in leaves(ctype):
        if kept is not None and leaf.path not in kept:
            fmt += f"{leaf.size}x"
            continue
        if leaf.path in left_out:
            fmt += f"{leaf.size}x"
            at[leaf.path] = leaf.offset
            continue
        fmt += leaf.fmt
        if leaf.path:
            at[leaf.path] = index
        index += 1  # padding is an item too (of path ())
    layout = struct.Struct(fmt)
    if layout.size != ffi.sizeof(ctype):
        raise TypeError(f"{ctype}: layout size {layout.size} != {ffi.sizeof(ctype)}")
    return layout, at
