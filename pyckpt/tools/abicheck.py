"""``pyckpt abi-check``: the built ckpt.ko against cffi's view of ckpt.h
(the ioctl ABI; the image format, ckpt_image.h, is checked for constants).

Three checks, read with pyelftools from the module file itself:

1. layouts: every struct of ckpt.h that the module's DWARF describes must
   have the size and member offsets cffi computed from the same header (a
   kernel built with other packing or another header copy differs here, and
   the message names the member);
2. vermagic: ``.modinfo``'s vermagic against the kernel that will load the
   module, so a mismatch is a sentence instead of insmod's "Invalid module
   format";
3. kernel-internal constants: every macro an array bound or member of ckpt.h
   uses must be defined in ckpt.h or in the uapi headers (the c/r infrastructure RFC:
   TASK_COMM_LEN "might be subject to changing.  Can it be part of the
   user<->kernel ABI?" -- not here).
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import lzma
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parents[2]


def default_ko(kver: str | None = None) -> Path:
    """The module `make build` made for kver: $CKPT_KO (the guest sets it),
    else build/kmod-KVER/ckpt.ko for kver, the running kernel, or the
    project's default kernel (vm/kver.sh), the first that exists."""
    if os.environ.get("CKPT_KO"):
        return Path(os.environ["CKPT_KO"])
    kvers = [kver or os.uname().release]
    with contextlib.suppress(OSError):
        out = subprocess.run(
            [str(ROOT / "vm" / "kver.sh")], capture_output=True, text=True, check=False
        ).stdout.strip()
        if out:
            kvers.append(out)
    paths = [ROOT / "build" / f"kmod-{k}" / "ckpt.ko" for k in kvers]
    return next((p for p in paths if p.exists()), paths[-1])


DEFAULT_KO = default_ko()
HEADER = ROOT / "kmod" / "include" / "uapi" / "ckpt.h"
IMAGE_HEADER = HEADER.with_name("ckpt_image.h")
# where the uapi headers a userspace build sees live (linux-libc-dev)
UAPI_DIRS = (
    "/usr/include/linux",
    "/usr/include/asm-generic",
    "/usr/include/x86_64-linux-gnu/asm",
)


class AbiCheckError(Exception):
    """The module file cannot be read or has no DWARF."""


@dataclass
class Layout:
    size: int
    members: dict[str, int] = field(default_factory=dict)  # name -> offset


# ---- 1. layouts -----------------------------------------------------------------


def _member_offset(die) -> int | None:
    attr = die.attributes.get("DW_AT_data_member_location")
    if attr is None:
        return 0  # a union member, or the first member with no location
    if isinstance(attr.value, int):
        return attr.value
    # DWARF 2 style: DW_OP_plus_uconst N
    v = attr.value
    return v[1] if len(v) == 2 and v[0] == 0x23 else None


def dwarf_layouts(
    path: str | os.PathLike[str], prefix: str = "ckpt_"
) -> dict[str, Layout]:
    """struct name -> Layout for every complete struct named prefix* in the DWARF."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        if not elf.has_dwarf_info() or not elf.get_section_by_name(".debug_info"):
            raise AbiCheckError(
                f"{path}: no DWARF (.debug_info): build with CONFIG_DEBUG_INFO"
            )
        dwarf = elf.get_dwarf_info()
        out: dict[str, Layout] = {}
        for cu in dwarf.iter_CUs():
            for die in cu.iter_DIEs():
                if die.tag != "DW_TAG_structure_type":
                    continue
                name = die.attributes.get("DW_AT_name")
                size = die.attributes.get("DW_AT_byte_size")
                if name is None or size is None:
                    continue  # anonymous or a declaration
                sname = name.value.decode()
                if not sname.startswith(prefix) or sname in out:
                    continue
                lay = Layout(size.value)
                for m in die.iter_children():
                    if m.tag != "DW_TAG_member" or "DW_AT_name" not in m.attributes:
                        continue
                    off = _member_offset(m)
                    if off is not None:
                        lay.members[m.attributes["DW_AT_name"].value.decode()] = off
                out[sname] = lay
        return out


def cffi_layouts() -> dict[str, Layout]:
    """struct name -> Layout for every struct of ckpt.h, as cffi computed it."""
    from pyckpt._ckpt import ffi

    out = {}
    for name in ffi.list_types()[1]:
        t = ffi.typeof(f"struct {name}")
        out[name] = Layout(ffi.sizeof(t), {n: f.offset for n, f in t.fields})
    return out


def compare_layouts(
    module: dict[str, Layout], ours: dict[str, Layout]
) -> tuple[list[str], list[str], list[str]]:
    """(problems, structs checked, structs the module's DWARF does not describe)."""
    problems, checked, absent = [], [], []
    for name in sorted(ours):
        want = ours[name]
        got = module.get(name)
        if got is None:
            absent.append(name)
            continue
        checked.append(name)
        if got.size != want.size:
            problems.append(
                f"struct {name}: size {got.size} in ckpt.ko, {want.size} in cffi"
            )
        for m, off in want.members.items():
            if m not in got.members:
                problems.append(
                    f"struct {name}: member {m} missing from ckpt.ko's DWARF"
                )
            elif got.members[m] != off:
                problems.append(
                    f"struct {name}: member {m} at offset {got.members[m]} in ckpt.ko, "
                    f"{off} in cffi"
                )
        for m in got.members.keys() - want.members.keys():
            problems.append(f"struct {name}: member {m} in ckpt.ko only, not in cffi")
    return problems, checked, absent


# ---- 2. vermagic ------------------------------------------------------------------


def modinfo(path: str | os.PathLike[str]) -> dict[str, str]:
    """The module's .modinfo as key -> value (the last of repeated keys)."""
    data = Path(path).read_bytes()
    if str(path).endswith(".xz"):
        data = lzma.decompress(data)
    elf = ELFFile(io.BytesIO(data))
    sec = elf.get_section_by_name(".modinfo")
    if sec is None:
        raise AbiCheckError(f"{path}: no .modinfo section: not a kernel module")
    out = {}
    for item in sec.data().split(b"\0"):
        if b"=" in item:
            k, _, v = item.decode(errors="replace").partition("=")
            out[k] = v
    return out


def kernel_vermagic(kver: str) -> str:
    """The vermagic of kernel kver, read from one of its own modules."""
    base = f"/lib/modules/{kver}/kernel"
    for pattern in ("**/*.ko", "**/*.ko.xz"):
        for ko in glob.iglob(f"{base}/{pattern}", recursive=True):
            return modinfo(ko)["vermagic"]
    raise AbiCheckError(f"no modules under {base}: is linux-image-{kver} installed?")


def check_vermagic(ko: str | os.PathLike[str], kver: str) -> str | None:
    """None if kver can load ko, else a sentence saying why it cannot."""
    mine = modinfo(ko).get("vermagic", "")
    theirs = kernel_vermagic(kver)
    if mine.split() == theirs.split():
        return None
    built = mine.split()[0] if mine else "?"
    return (
        f"{ko} was built for {built!r} (vermagic {mine.strip()!r}) but kernel {kver} "
        f"expects {theirs.strip()!r}: insmod would fail with 'Invalid module "
        f"format'; rebuild with make -C kmod KVER={kver}"
    )


# ---- 3. kernel-internal constants ---------------------------------------------------

_DEFINE = re.compile(r"^\s*#\s*define\s+([A-Za-z_]\w*)", re.MULTILINE)
_MACRO = re.compile(r"\b([A-Z][A-Z0-9_]{2,})\b")


def _strip_comments(text: str) -> str:
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL))


def uapi_macros(dirs: tuple[str, ...] = UAPI_DIRS) -> set[str]:
    names: set[str] = set()
    for d in dirs:
        for p in glob.glob(f"{d}/**/*.h", recursive=True):
            with open(p, errors="replace") as f:
                names.update(_DEFINE.findall(f.read()))
    return names


def kernel_constants(header: str, uapi: set[str] | None = None) -> list[str]:
    """Macros ckpt.h uses that neither ckpt.h nor the uapi headers define:
    kernel-internal constants (TASK_COMM_LEN, ...) that would tie the ABI to
    one kernel's build."""
    code = _strip_comments(header)
    own = set(_DEFINE.findall(code))
    for body in re.findall(r"\benum\b[^{;]*\{(.*?)\}", code, re.DOTALL):
        own.update(re.findall(r"([A-Za-z_]\w*)\s*(?:=[^,]*)?(?:,|$)", body.strip()))
    used: set[str] = set()
    for line in code.splitlines():
        m = re.match(r"\s*#\s*define\s+\w+(?:\([^)]*\))?(.*)", line)
        if m:
            used.update(_MACRO.findall(m[1]))  # what a constant is defined with
        elif not line.lstrip().startswith("#"):  # not an include or a guard
            used.update(_MACRO.findall(line))
    if uapi is None:
        uapi = uapi_macros()
    return sorted(n for n in used - own if n not in uapi and not n.startswith("_"))


# ---- the command ---------------------------------------------------------------------


def main(
    module: str | None = None,
    kver: str | None = None,
    *,
    as_json: bool = False,
    vermagic_only: bool = False,
) -> int:
    ko = Path(module) if module else default_ko(kver)
    kver = kver or os.uname().release
    if not ko.exists():
        print(f"pyckpt abi-check: {ko} does not exist (make build)", file=sys.stderr)
        return 1
    report: dict = {"module": str(ko), "kver": kver}
    problems: list[str] = []
    try:
        vm = check_vermagic(ko, kver)
        report["vermagic"] = modinfo(ko).get("vermagic", "")
        if vm:
            problems.append(vm)
        if not vermagic_only:
            probs, checked, absent = compare_layouts(dwarf_layouts(ko), cffi_layouts())
            problems += probs
            report["checked"], report["absent"] = checked, absent
            # one text: the image header uses ckpt.h's constants
            consts = kernel_constants(HEADER.read_text() + IMAGE_HEADER.read_text())
            report["kernel_constants"] = consts
            problems += [
                f"ckpt.h uses {c}, defined neither in ckpt.h nor in the uapi headers: "
                "a kernel-internal constant in the ABI"
                for c in consts
            ]
    except (AbiCheckError, OSError) as e:
        problems.append(str(e))
    report["problems"] = problems
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        print(f"module   {ko} (vermagic {report.get('vermagic', '?').strip()})")
        print(
            f"kernel   {kver}: {'loadable' if not any('vermagic' in p for p in problems) else 'NOT loadable'}"
        )
        if "checked" in report:
            print(
                f"layouts  {len(report['checked'])} structs of ckpt.h compared with "
                f"the module's DWARF: {', '.join(report['checked'])}"
            )
            if report["absent"]:
                print(
                    f"         not described by the module's DWARF (the module does not "
                    f"use them): {', '.join(report['absent'])}"
                )
            print(
                f"consts   kernel-internal constants in ckpt.h: {len(report['kernel_constants'])}"
            )
        for p in problems:
            print(f"FAIL     {p}")
        if not problems:
            print("ok")
    return 1 if problems else 0
