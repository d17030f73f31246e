"""cffi_build.py: the cdef is generated from ckpt.h and ckpt_image.h, and the
build is in place."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from cffi import FFI

import pyckpt
from pyckpt.abi import ffi, lib

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cffi_build", ROOT / "cffi_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cdef_has_no_preprocessor_lines_but_defines(build: ModuleType) -> None:
    cdef = build.headers_cdef()
    for line in cdef.splitlines():
        if line.lstrip().startswith("#"):
            assert re.fullmatch(r"#define \w+ \.\.\.", line.strip()), line
    assert "#include" not in cdef
    assert "_UAPI_LINUX_CKPT_H" not in cdef  # the include guards are skipped
    assert "_UAPI_LINUX_CKPT_IMAGE_H" not in cdef


def test_every_define_of_the_header_is_in_the_lib(
    build: ModuleType, header_text: str
) -> None:
    guards = set(re.findall(r"#ifndef (\w+)", header_text))
    names = re.findall(r"^#define\s+(\w+)[ \t]", header_text, re.MULTILINE)
    assert names, "no defines found"
    for name in names:
        if name not in guards:
            assert hasattr(lib, name), name


def test_every_struct_and_enum_is_in_the_ffi(header_text: str) -> None:
    for kind, name in re.findall(r"^(struct|enum) (\w+) \{", header_text, re.MULTILINE):
        assert ffi.typeof(f"{kind} {name}")


def test_generator_on_a_synthetic_header(build: ModuleType) -> None:
    text = """
    /* a comment with #define FAKE 1 inside */
    #ifndef GUARD_H
    #define GUARD_H
    #include <linux/types.h>
    #define PLAIN 3 /* trailing */
    #define LONG_ONE (1U << \\
                      4)
    #define FUNC(x) ((x) + 1)
    #define NAME "text"
    #define LEN 8
    struct s { __u32 a; char b[LEN]; };
    #endif
    """
    cdef = build.header_cdef(text)
    assert "#define PLAIN ..." in cdef
    assert "#define LONG_ONE ..." in cdef
    assert "FUNC" not in cdef
    assert "FAKE" not in cdef
    assert "GUARD_H" not in cdef
    assert "static const char *const NAME;" in cdef
    assert "char b[...];" in cdef
    FFI().cdef(cdef)  # cffi accepts it


def test_generated_cdef_parses(build: ModuleType) -> None:
    FFI().cdef(build.headers_cdef())


def test_the_split(build: ModuleType) -> None:
    # ckpt.h is the ioctl ABI, the module's only uapi include; ckpt_image.h
    # the image format, which includes ckpt.h for what both share
    abi, image = build.HEADER.read_text(), build.IMAGE_HEADER.read_text()
    assert "struct ckpt_hdr " not in abi and "CKPT_FORMAT_VERSION" not in abi
    assert "struct ckpt_hdr {" in image and "CKPT_IOC_" not in image
    assert '#include "ckpt.h"' in image
    kmod = ROOT / "kmod"
    for src in [*kmod.glob("*.[ch]"), *(kmod / "host").glob("*.[ch]")]:
        assert "ckpt_image.h" not in src.read_text(), src.name
    # the kinds the module reports vs the image's own: one numbering, no overlap
    mod = ffi.typeof("enum ckpt_file_kind").relements
    img = ffi.typeof("enum ckpt_image_file_kind").relements
    assert not set(mod) & set(img)
    mod_values = {v for k, v in mod.items() if not k.endswith("_MAX")}
    img_values = {v for k, v in img.items() if not k.endswith("_MAX")}
    assert not mod_values & img_values


def test_extension_built_in_place() -> None:
    # the editable install builds pyckpt/_ckpt*.so next to the sources
    pkg = Path(pyckpt.__file__).resolve().parent
    assert pkg == ROOT / "pyckpt"
    assert list(pkg.glob("_ckpt*.so"))


def test_no_hand_written_layouts() -> None:
    # every layout comes from the header through cffi: no struct module,
    # no ctypes structures, no offsets in the Python sources; records.py's
    # Codec builds its struct.Struct formats from cffi's offsets and sizes
    # only (test_image's test_codec_matches_cffi checks each one)
    for path in (ROOT / "pyckpt").glob("*.py"):
        text = path.read_text()
        if path.name == "records.py":
            assert "ffi.typeof(ctype).fields" in text
            continue
        if path.name == "sockdiag.py":
            continue  # the kernel's netlink layouts (linux/unix_diag.h), not ckpt.h's
        for banned in (
            "import struct",
            "struct.pack",
            "struct.unpack",
            "import ctypes",
        ):
            assert banned not in text, f"{path.name}: {banned}"
