"""cffi_build.py: the cdef is generated from ckpt.h, and the build is in place."""

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
    cdef = build.header_cdef(build.HEADER.read_text())
    for line in cdef.splitlines():
        if line.lstrip().startswith("#"):
            assert re.fullmatch(r"#define \w+ \.\.\.", line.strip()), line
    assert "#include" not in cdef
    assert "_UAPI_LINUX_CKPT_H" not in cdef  # the include guard is skipped


def test_every_define_of_the_header_is_in_the_lib(
    build: ModuleType, header_text: str
) -> None:
    guard = re.search(r"#ifndef (\w+)", header_text).group(1)
    names = re.findall(r"^#define\s+(\w+)[ \t]", header_text, re.MULTILINE)
    assert names, "no defines found"
    for name in names:
        if name != guard:
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
    FFI().cdef(build.header_cdef(build.HEADER.read_text()))


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
