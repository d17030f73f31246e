"""pyckpt abi-check: ckpt.ko's DWARF against cffi, vermagic, no kernel constants."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyckpt.tools import abicheck
from pyckpt.tools.abicheck import AbiCheckError, Layout

KO = abicheck.DEFAULT_KO
needs_ko = pytest.mark.skipif(
    not KO.exists(), reason=f"{KO} not built (make build builds it)"
)


def built_for() -> str:
    return abicheck.modinfo(KO)["vermagic"].split()[0]


@pytest.fixture(scope="module")
def module_layouts() -> dict[str, Layout]:
    if not KO.exists():
        pytest.skip(f"{KO} not built (make build builds it)")
    return abicheck.dwarf_layouts(KO)


def test_kbuild_gives_dwarf_with_the_ioctl_structs(module_layouts) -> None:
    # Debian's kbuild (CONFIG_DEBUG_INFO=y) keeps DWARF in the .ko
    for name in (
        "ckpt_obj_arg",
        "ckpt_stats",
        "ckpt_batch",
        "ckpt_defer",
        "ckpt_setup",
    ):
        assert name in module_layouts, sorted(module_layouts)
    assert module_layouts["ckpt_stats"].members["nr_objs"] == 16


def test_module_layouts_equal_cffi(module_layouts) -> None:
    problems, checked, _ = abicheck.compare_layouts(
        module_layouts, abicheck.cffi_layouts()
    )
    assert problems == []
    assert len(checked) >= 12


def test_a_moved_member_is_named(module_layouts) -> None:
    bad = copy.deepcopy(module_layouts)
    bad["ckpt_stats"].members["nr_free"] += 4
    problems, _, _ = abicheck.compare_layouts(bad, abicheck.cffi_layouts())
    assert problems == [
        "struct ckpt_stats: member nr_free at offset 28 in ckpt.ko, 24 in cffi"
    ]


def test_size_and_missing_and_extra_members_are_named(module_layouts) -> None:
    bad = copy.deepcopy(module_layouts)
    bad["ckpt_defer"].size += 8
    del bad["ckpt_obj_arg"].members["objref"]
    bad["ckpt_leak"].members["kernel_only"] = 40
    problems, _, _ = abicheck.compare_layouts(bad, abicheck.cffi_layouts())
    text = "\n".join(problems)
    assert "struct ckpt_defer: size" in text
    assert "struct ckpt_obj_arg: member objref missing from ckpt.ko's DWARF" in text
    assert "struct ckpt_leak: member kernel_only in ckpt.ko only" in text


@needs_ko
def test_stripped_module_says_there_is_no_dwarf(tmp_path: Path) -> None:
    if not shutil.which("objcopy"):
        pytest.skip("no objcopy (binutils) to strip a copy")
    ko = tmp_path / "ckpt.ko"
    subprocess.run(["objcopy", "--strip-debug", str(KO), str(ko)], check=True)
    with pytest.raises(AbiCheckError, match="no DWARF"):
        abicheck.dwarf_layouts(ko)


@needs_ko
def test_vermagic_of_the_build_kernel_matches() -> None:
    assert abicheck.check_vermagic(KO, built_for()) is None


@needs_ko
def test_vermagic_of_another_kernel_is_a_sentence() -> None:
    others = [
        k
        for k in os.listdir("/lib/modules")
        if k != built_for() and os.path.isdir(f"/lib/modules/{k}/kernel")
    ]
    if not others:
        pytest.skip("only one kernel installed: no other vermagic to compare with")
    msg = abicheck.check_vermagic(KO, others[0])
    assert msg is not None
    assert f"built for '{built_for()}'" in msg
    assert "Invalid module format" in msg and f"KVER={others[0]}" in msg


def test_no_kernel_internal_constant_in_the_abi() -> None:
    assert abicheck.kernel_constants(abicheck.HEADER.read_text()) == []
    assert (
        abicheck.kernel_constants(
            abicheck.HEADER.read_text() + abicheck.IMAGE_HEADER.read_text()
        )
        == []
    )


def test_task_comm_len_in_the_abi_would_be_caught() -> None:
    # the c/r infrastructure RFC: "TASK_COMM_LEN might be subject to changing"
    text = (abicheck.HEADER.read_text() + abicheck.IMAGE_HEADER.read_text()).replace(
        "__u32 argc;", "__u32 argc;\n\tchar comm[TASK_COMM_LEN];"
    )
    assert "TASK_COMM_LEN" in text
    assert abicheck.kernel_constants(text) == ["TASK_COMM_LEN"]
    # a uapi constant (from <linux/...>) is fine; ckpt.h's own too
    ok = text.replace("TASK_COMM_LEN", "CKPT_UTS_LEN")
    assert abicheck.kernel_constants(ok) == []


@needs_ko
def test_cli_exit_status() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pyckpt", "abi-check", *args],
            capture_output=True,
            check=False,
            text=True,
        )

    ok = run("--kver", built_for())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "layouts" in ok.stdout and ok.stdout.rstrip().endswith("ok")
    missing = run("--module", "/nonexistent.ko", "--kver", built_for())
    assert missing.returncode == 1 and "does not exist" in missing.stderr
