"""The cffi binding agrees with ckpt.h and ckpt_image.h: sizes, padding, ioctl
numbers, enums."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyckpt.abi import (
    IOCTLS,
    DeferAction,
    ObjType,
    Policy,
    ffi,
    ioc,
    ioc_dir,
    ioc_nr,
    ioc_size,
    ioc_type,
    lib,
    with_size,
)

# struct name -> the constant naming the size of its first version
VERSIONED = {
    "ckpt_obj_arg": "CKPT_OBJ_ARG_SIZE_VER0",
    "ckpt_batch": "CKPT_BATCH_SIZE_VER0",
    "ckpt_setup": "CKPT_SETUP_SIZE_VER0",
    "ckpt_defer": "CKPT_DEFER_SIZE_VER0",
    "ckpt_tags": "CKPT_TAGS_SIZE_VER0",
    "ckpt_contained": "CKPT_CONTAINED_SIZE_VER0",
    "ckpt_errors": "CKPT_ERRORS_SIZE_VER0",
    "ckpt_stats": "CKPT_STATS_SIZE_VER0",
    "ckpt_test_obj": "CKPT_TEST_OBJ_SIZE_VER0",
    "ckpt_task_fds": "CKPT_TASK_FDS_SIZE_VER0",
    "ckpt_task_creds": "CKPT_TASK_CREDS_SIZE_VER0",
    "ckpt_version": "CKPT_VERSION_SIZE_VER0",
    # array elements the module writes, sized by the caller (ABI 5)
    "ckpt_err_entry": "CKPT_ERR_ENTRY_SIZE_VER0",
    "ckpt_leak": "CKPT_LEAK_SIZE_VER0",
    "ckpt_fd_entry": "CKPT_FD_ENTRY_SIZE_VER0",
    "ckpt_fd_detail": "CKPT_FD_DETAIL_SIZE_VER0",
}


HEADER = Path(__file__).resolve().parents[2] / "kmod" / "include" / "uapi" / "ckpt.h"


def header_structs(text: str) -> list[str]:
    return re.findall(r"^struct (\w+) \{", text, re.MULTILINE)


def header_ioctls(text: str) -> list[tuple[str, str, int, str | None]]:
    """(name, direction macro, nr, struct or None) of every CKPT_IOC_* define."""
    pat = re.compile(
        r"^#define\s+(CKPT_IOC_\w+)\s+(_IO\w*)\(CKPT_IOC_MAGIC,\s*(0x[0-9a-fA-F]+)"
        r"(?:,\s*struct (\w+))?\)",
        re.MULTILINE,
    )
    return [(n, d, int(nr, 16), s) for n, d, nr, s in pat.findall(text)]


def test_every_versioned_struct_is_known(header_text: str) -> None:
    sized = set(re.findall(r"#define\s+(CKPT_\w+_SIZE_VER0)", header_text))
    assert sized == set(VERSIONED.values())
    assert set(VERSIONED) <= set(header_structs(header_text))


@pytest.mark.parametrize(("struct", "const"), VERSIONED.items())
def test_struct_size_is_its_latest_version(struct: str, const: str) -> None:
    # a struct that grew names each size it had: ..._SIZE_VER0, _VER1, ...
    prefix = const.removesuffix("0")
    versions = sorted(
        int(n.removeprefix(prefix)) for n in dir(lib) if n.startswith(prefix)
    )
    assert versions == list(range(len(versions)))
    sizes = [getattr(lib, f"{prefix}{v}") for v in versions]
    assert sizes == sorted(sizes)
    assert ffi.sizeof(f"struct {struct}") == sizes[-1]


def test_every_struct_is_a_multiple_of_8(header_text: str) -> None:
    for name in header_structs(header_text):
        assert ffi.sizeof(f"struct {name}") % 8 == 0, name


def test_no_implicit_padding(header_text: str) -> None:
    # every byte belongs to a named field: explicit padding only, so the
    # layout is the same for every compiler and for 32-bit callers
    for name in header_structs(header_text):
        ctype = ffi.typeof(f"struct {name}")
        end = 0
        for fname, field in ctype.fields:
            assert field.offset == end, f"struct {name}: hole before {fname}"
            end = field.offset + ffi.sizeof(field.type)
        assert end == ffi.sizeof(ctype), f"struct {name}: hole at the end"


def test_no_pointers_in_the_abi(header_text: str) -> None:
    for name in header_structs(header_text):
        for fname, field in ffi.typeof(f"struct {name}").fields:
            assert field.type.kind != "pointer", f"struct {name}.{fname}"


def test_ioctls_in_header_are_all_bound(header_text: str) -> None:
    names = {n for n, *_ in header_ioctls(header_text)}
    assert names == set(IOCTLS.values())
    assert len(IOCTLS) == len(names)  # distinct numbers


@pytest.mark.parametrize("entry", header_ioctls(HEADER.read_text()), ids=lambda e: e[0])
def test_ioctl_number_decodes(entry: tuple[str, str, int, str | None]) -> None:
    name, macro, nr, struct = entry
    req = getattr(lib, name)
    direction = {
        "_IO": lib._IOC_NONE,
        "_IOR": lib._IOC_READ,
        "_IOW": lib._IOC_WRITE,
        "_IOWR": lib._IOC_READ | lib._IOC_WRITE,
    }[macro]
    assert ioc_type(req) == lib.CKPT_IOC_MAGIC == 0xC7
    assert ioc_nr(req) == nr
    assert ioc_dir(req) == direction
    size = ffi.sizeof(f"struct {struct}") if struct else 0
    assert ioc_size(req) == size
    if struct:  # the number encodes the struct's latest size
        prefix = VERSIONED[struct].removesuffix("0")
        last = max(n for n in dir(lib) if n.startswith(prefix))
        assert ioc_size(req) == getattr(lib, last)
    assert ioc(direction, lib.CKPT_IOC_MAGIC, nr, size) == req


def test_ioc_helpers_round_trip() -> None:
    req = lib.CKPT_IOC_LOOKUP_ADD
    bigger = with_size(req, 48)
    assert ioc_size(bigger) == 48
    assert (ioc_dir(bigger), ioc_type(bigger), ioc_nr(bigger)) == (
        ioc_dir(req),
        ioc_type(req),
        ioc_nr(req),
    )
    assert with_size(bigger, ffi.sizeof("struct ckpt_obj_arg")) == req
    with pytest.raises(ValueError):
        ioc(0, 0xC7, 1, lib._IOC_SIZEMASK + 1)


def test_enums_mirror_the_header(header_text: str) -> None:
    def elements(enum_name: str) -> dict[str, int]:
        body = re.search(
            rf"enum {enum_name} \{{(.*?)\}};", header_text, re.DOTALL
        ).group(1)
        return {
            m.group(1): int(m.group(2))
            for m in re.finditer(r"(CKPT_\w+) = (\d+)", body)
        }

    for py, c, prefix in [
        (ObjType, "ckpt_obj_type", "CKPT_OBJ_"),
        (Policy, "ckpt_policy", "CKPT_POLICY_"),
        (DeferAction, "ckpt_defer_action", "CKPT_DEFER_"),
    ]:
        want = {k.removeprefix(prefix): v for k, v in elements(c).items()}
        assert {m.name: m.value for m in py} == want


def test_literal_constants_match_the_header(header_text: str) -> None:
    # the cdef says "#define NAME ..." and the compiler fills the value in:
    # check those values against the header's own text where it is a literal
    checked = 0
    define = re.compile(r"^#define\s+(CKPT_\w+)\s+(.+?)\s*(?:/\*.*)?$", re.MULTILINE)
    for name, value in define.findall(header_text):
        if m := re.fullmatch(r"(0x[0-9a-fA-F]+|\d+)U?", value):
            want = int(m.group(1), 0)
        elif m := re.fullmatch(r"\(1U << (\d+)\)", value):
            want = 1 << int(m.group(1))
        else:
            continue  # ioctl numbers and strings: checked elsewhere
        assert getattr(lib, name) == want, name
        checked += 1
    assert checked >= 20


def test_string_constant() -> None:
    assert ffi.string(lib.CKPT_DEVICE) == b"/dev/ckpt"


def test_array_lengths_from_the_header() -> None:
    fields = dict(ffi.typeof("struct ckpt_err_entry").fields)
    assert ffi.sizeof(fields["func"].type) == lib.CKPT_ERR_FUNC_LEN
    assert ffi.sizeof(fields["msg"].type) == lib.CKPT_ERR_MSG_LEN


@given(
    direction=st.integers(0, lib._IOC_DIRMASK),
    type_=st.integers(0, lib._IOC_TYPEMASK),
    nr=st.integers(0, lib._IOC_NRMASK),
    size=st.integers(0, lib._IOC_SIZEMASK),
)
def test_ioc_encoding_round_trips(
    direction: int, type_: int, nr: int, size: int
) -> None:
    req = ioc(direction, type_, nr, size)
    assert (ioc_dir(req), ioc_type(req), ioc_nr(req), ioc_size(req)) == (
        direction,
        type_,
        nr,
        size,
    )
    assert 0 <= req < 1 << 32


def test_every_written_array_carries_its_element_size() -> None:
    # ABI 5: the structs pointing at an array the module writes name the
    # element size, as ckpt_batch does, so that the elements can grow
    sized = {
        "ckpt_batch": "item_size",
        "ckpt_errors": "entry_size",
        "ckpt_contained": "leak_size",
        "ckpt_task_fds": "entry_size",
    }
    for struct, field in sized.items():
        assert field in dict(ffi.typeof(f"struct {struct}").fields), struct


def test_insert_and_fetch_write_nothing_back() -> None:
    # INSERT has no output; FETCH's fd is the ioctl's value (ABI 5)
    for req in (lib.CKPT_IOC_INSERT, lib.CKPT_IOC_FETCH):
        assert ioc_dir(req) == lib._IOC_WRITE


def test_abi_version() -> None:
    assert lib.CKPT_ABI_VERSION == 5
