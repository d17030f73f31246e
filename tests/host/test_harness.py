"""The test harness itself: kernel discovery (vm/kver.sh), the closing summary
line over several kernels (tests/summary.py), and the DKMS registration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KVER_SH = ROOT / "vm" / "kver.sh"
SUMMARY = ROOT / "tests" / "summary.py"


def kver(boot: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # a clean environment: the caller's CKPT_KVER(S) must not leak in
    base = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_")}
    return subprocess.run(
        [str(KVER_SH), *args],
        env={**base, "CKPT_BOOT_DIR": str(boot), **env},
        capture_output=True,
        text=True,
        check=False,
    )


def fake_boot(tmp_path: Path, *versions: str) -> Path:
    boot = tmp_path / "boot"
    boot.mkdir()
    for v in versions:
        (boot / f"vmlinuz-{v}").touch()
        (boot / f"config-{v}").touch()
    return boot


BOOKWORM = (
    "6.1.0-55-amd64",
    "6.1.0-56-amd64",
    "6.1.0-56-cloud-amd64",
    "6.1.0-56-rt-amd64",
    "6.12.117+deb12-amd64",
    "6.12.117+deb12-cloud-amd64",
    "6.12.9+deb12-amd64",
)


def test_kver_default_is_newest_6_1(tmp_path: Path) -> None:
    r = kver(fake_boot(tmp_path, *BOOKWORM))
    assert (r.returncode, r.stdout) == (0, "6.1.0-56-amd64\n")


def test_kver_all_is_newest_generic_of_each_series(tmp_path: Path) -> None:
    r = kver(fake_boot(tmp_path, *BOOKWORM), "--all")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["6.1.0-56-amd64", "6.12.117+deb12-amd64"]


def test_kver_finds_debNN_named_kernel_alone(tmp_path: Path) -> None:
    # the regex used to accept only X.Y.Z-NN-amd64, so 6.12 was never found
    boot = fake_boot(tmp_path, "6.12.117+deb12-amd64", "6.12.117+deb12-rt-amd64")
    assert kver(boot).stdout == "6.12.117+deb12-amd64\n"
    assert kver(boot, "--all").stdout == "6.12.117+deb12-amd64\n"


def test_kver_none_is_a_clear_error(tmp_path: Path) -> None:
    r = kver(fake_boot(tmp_path, "6.1.0-56-cloud-amd64"), "--all")
    assert r.returncode == 1
    assert "no Debian amd64 kernel" in r.stderr
    assert r.stdout == ""


def test_kver_environment_narrows(tmp_path: Path) -> None:
    boot = fake_boot(tmp_path, *BOOKWORM)
    assert kver(boot, CKPT_KVER="6.12.117+deb12-amd64").stdout == (
        "6.12.117+deb12-amd64\n"
    )
    assert kver(boot, "--all", CKPT_KVER="6.1.0-55-amd64").stdout == (
        "6.1.0-55-amd64\n"
    )
    r = kver(boot, "--all", CKPT_KVERS="a b", CKPT_KVER="c")
    assert r.stdout.split() == ["a", "b"]
    # CKPT_KVERS is for the list only: one kernel stays the default's
    assert kver(boot, CKPT_KVERS="a b").stdout == "6.1.0-56-amd64\n"


def test_kver_bad_argument(tmp_path: Path) -> None:
    r = kver(fake_boot(tmp_path, *BOOKWORM), "--al")
    assert r.returncode == 2 and "usage" in r.stderr


def junit(path: Path, passed: int, failed: int = 0, skipped: int = 0) -> Path:
    cases = ['<testcase classname="t" name="ok"/>'] * passed
    cases += [
        '<testcase classname="t" name="bad"><failure message="x"/></testcase>'
    ] * failed
    cases += ['<testcase classname="t" name="skip"><skipped/></testcase>'] * skipped
    path.write_text(f"<testsuites><testsuite>{''.join(cases)}</testsuite></testsuites>")
    return path


def summary(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SUMMARY), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_summary_counts_every_kernel(tmp_path: Path) -> None:
    r = summary(
        f"vm-6.1={junit(tmp_path / 'a.xml', 243, 0, 1)}",
        f"vm-6.1-harness={junit(tmp_path / 'b.xml', 6)}",
        f"vm-6.12={junit(tmp_path / 'c.xml', 240, 3)}",
        f"vm-6.12-harness={junit(tmp_path / 'd.xml', 6)}",
    )
    lines = r.stdout.splitlines()
    assert lines[-1] == "495 passed, 3 failed, 1 skipped"
    assert r.returncode == 1
    rows = {ln.split()[0]: ln for ln in lines if re.match(r"  vm-\S+ +\d", ln)}
    assert set(rows) == {"vm-6.1", "vm-6.1-harness", "vm-6.12", "vm-6.12-harness"}
    assert re.search(r"vm-6\.12 +240 passed +3 failed", rows["vm-6.12"])
    # one column for all, however long the names
    assert len({ln.index("passed") for ln in rows.values()}) == 1


def test_summary_kernel_that_never_ran_fails(tmp_path: Path) -> None:
    r = summary(
        f"vm-6.1={junit(tmp_path / 'a.xml', 10)}",
        f"vm-6.12={tmp_path / 'missing.xml'}",
    )
    assert r.stdout.splitlines()[-1] == "10 passed, 1 failed, 0 skipped"
    assert "vm-6.12: " in r.stdout and "missing" in r.stdout
    assert r.returncode == 1


def test_dkms_conf_matches_the_build() -> None:
    conf = dict(
        re.findall(
            r'^([A-Z_]+(?:\[0\])?)="([^"]*)"$',
            (ROOT / "kmod" / "dkms.conf").read_text(),
            re.MULTILINE,
        )
    )
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert conf["PACKAGE_VERSION"] == version
    assert conf["PACKAGE_NAME"] == "ckpt"
    kbuild = (ROOT / "kmod" / "Kbuild").read_text()
    assert f"obj-m += {conf['BUILT_MODULE_NAME[0]']}.o" in kbuild
    assert conf["AUTOINSTALL"] == "yes"


def test_dkms_conf_is_valid_bash() -> None:
    # dkms sources dkms.conf with bash and expands MAKE per kernel
    conf = ROOT / "kmod" / "dkms.conf"
    script = 'kernel_source_dir=/k dkms_tree=/d; . "$1"; echo "$MAKE"'
    r = subprocess.run(
        ["bash", "-euc", script, "-", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert r.stdout.strip() == f"make -C /k M=/d/ckpt/{version}/build modules"


FAKE_VNG = """#!/bin/sh
# stands in for virtme-ng: output on both streams, then wait, then a status
echo $$ >"$FAKE_DIR/vng.pid"
echo "fake vng out"
echo "fake vng err" >&2
sleep "$FAKE_SLEEP" &
echo $! >"$FAKE_DIR/sleep.pid"
wait
exit "$FAKE_RC"
"""


def fake_venv(tmp_path: Path, vng: str) -> tuple[Path, dict[str, str]]:
    """A venv whose vng is the script ``vng``, and the environment without
    any CKPT_* of the caller's."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "vng").write_text(vng)
    (venv / "bin" / "vng").chmod(0o755)
    return venv, {k: v for k, v in os.environ.items() if not k.startswith("CKPT_")}


def run_sh(
    tmp_path: Path, sleep: int, rc: int, timeout: int
) -> tuple[subprocess.CompletedProcess[str], float, list[int]]:
    """vm/run.sh with a fake vng: its waiting, timeout and exit status."""
    boot = subprocess.run([str(KVER_SH)], capture_output=True, text=True, check=False)
    kv = boot.stdout.strip()
    if boot.returncode or not Path(f"/lib/modules/{kv}/kernel").is_dir():
        pytest.skip("no Debian kernel installed here (make setup installs one)")
    venv, base = fake_venv(tmp_path, FAKE_VNG)
    env = {
        **base,
        "CKPT_VENV": str(venv),
        "CKPT_VM_NO_MODULE": "1",
        "CKPT_VM_TIMEOUT": str(timeout),
        "FAKE_DIR": str(tmp_path),
        "FAKE_SLEEP": str(sleep),
        "FAKE_RC": str(rc),
    }
    t0 = time.monotonic()
    r = subprocess.run(
        [str(ROOT / "vm" / "run.sh"), "true"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    pids = [int((tmp_path / f).read_text()) for f in ("vng.pid", "sleep.pid")]
    return r, time.monotonic() - t0, pids


def test_run_sh_passes_the_guest_status_and_output(tmp_path: Path) -> None:
    r, took, _ = run_sh(tmp_path, sleep=1, rc=3, timeout=30)
    assert r.returncode == 3
    assert "fake vng out" in r.stdout and "fake vng err" in r.stderr
    assert took < 20  # not the timeout


def test_run_sh_timeout_kills_the_guest(tmp_path: Path) -> None:
    r, took, pids = run_sh(tmp_path, sleep=120, rc=0, timeout=2)
    assert r.returncode == 124, r.stderr
    assert "timed out after 2s" in r.stderr
    assert took < 30
    # vng and what it started (qemu, here a sleep) are gone, not left behind
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z"


# ---- the debug kernel: the kernel log scanner (vm/klog.py), the build's
# cache key (vm/debug-kernel.sh), bring-your-own-kernel (CKPT_KERNEL_TREE)

KLOG = ROOT / "vm" / "klog.py"
sys.path.insert(0, str(ROOT / "vm"))
import klog

# a guest's dmesg: markers (vm/guest.sh, vm/kmsg_marks.py, vm/guest-tests.sh)
# around one report of each kind; timestamps as dmesg prints them
SAMPLE_DMESG = """\
[    0.000000] Linux version 6.1.192-ckpt-debug
[    1.200000] WARNING: CPU: 0 PID: 1 at drivers/foo.c:12 foo_probe+0x1/0x2
[    1.200001] Call Trace:
[    1.200002]  <TASK>
[    5.000000] ckpt-test: phase insmod
[    5.100000] ckpt: loading out-of-tree module taints kernel.
[    6.000000] ckpt-test: phase tests
[    7.000000] ckpt-test: start tests/vm/test_objhash.py::test_add[1]
[    7.500000] ==================================================================
[    7.500001] BUG: KASAN: slab-use-after-free in ckpt_obj_put+0x2a/0x90 [ckpt]
[    7.500002] Read of size 4 at addr ffff888012345678 by task python/321
[    7.500003] Call Trace:
[    7.500004]  <TASK>
[    7.500005]  dump_stack_lvl+0x5b/0x77
[    8.000000] ckpt-test: start tests/vm/test_objhash.py::test_clean
[    9.000000] ckpt-test: start tests/vm/test_lifetime.py::test_close with spaces
[    9.100000] ======================================================
[    9.100001] WARNING: possible circular locking dependency detected
[    9.100002] 6.1.192-ckpt-debug #1 Tainted: G           OE
[    9.100003] ------------------------------------------------------
[    9.100004] python/400 is trying to acquire lock:
[    9.100050] stack backtrace:
[    9.100051] Call Trace:
[   10.000000] ckpt-test: start tests/vm/test_policies.py::test_shift
[   10.100000] ================================================================================
[   10.100001] UBSAN: shift-out-of-bounds in kmod/objhash.c:120:9
[   10.100002] shift exponent 64 is too large for 64-bit type 'long unsigned int'
[   11.000000] ckpt-test: start tests/vm/test_policies.py::test_kfence
[   11.100000] BUG: KFENCE: use-after-free read in ckpt_free+0x1/0x2 [ckpt]
[   12.000000] ckpt-test: start tests/vm/test_policies.py::test_sleep
[   12.100000] BUG: sleeping function called from invalid context at mm/slab.h:742
[   13.000000] ckpt-test: start tests/vm/test_policies.py::test_list
[   13.100000] list_add corruption. next->prev should be prev (ffff1), but was ffff2.
[   13.100001] WARNING: CPU: 1 PID: 77 at lib/list_debug.c:30 __list_add_valid+0x1/0x2
[   14.000000] ckpt-test: phase after-tests
[   14.500000] ckpt-test: phase rmmod
[   14.600000] WARNING: CPU: 0 PID: 500 at kmod/ckpt.c:99 ckpt_exit+0x1/0x2 [ckpt]
[   20.000000] ckpt-test: phase kmemleak-scan
[   25.000000] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)
[   25.000001] ckpt-test: phase kmemleak-read
[   26.000000] ckpt-test: phase done
"""

SAMPLE_KMEMLEAK = """\
unreferenced object 0xffff888003a1c000 (size 64):
  comm "python", pid 321, jiffies 4294901000 (age 17.500s)
  hex dump (first 32 bytes):
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
  backtrace:
    [<ffffffff8132b3c1>] kmalloc_trace+0x21/0x90
    [<ffffffffc0001234>] 0xffffffffc0001234
unreferenced object 0xffff888003a1d000 (size 32):
  comm "swapper/0", pid 1, jiffies 4294667000 (age 24.000s)
  hex dump (first 32 bytes):
  backtrace:
    [<ffffffff8132b3c1>] kmalloc_trace+0x21/0x90
"""


def test_klog_names_the_test_of_each_report() -> None:
    reports, _ = klog.parse_log(SAMPLE_DMESG)
    got = [(r.kind, r.where, r.ours) for r in reports]
    assert got == [
        ("WARNING", klog.BOOT, False),  # booting, before ckpt.ko: not ours
        ("KASAN", "tests/vm/test_objhash.py::test_add[1]", True),
        ("lockdep", "tests/vm/test_lifetime.py::test_close with spaces", True),
        ("UBSAN", "tests/vm/test_policies.py::test_shift", True),
        ("KFENCE", "tests/vm/test_policies.py::test_kfence", True),
        ("atomic-sleep", "tests/vm/test_policies.py::test_sleep", True),
        # the WARNING right under the corruption line is the same report
        ("list-corruption", "tests/vm/test_policies.py::test_list", True),
        ("WARNING", "rmmod", True),
    ]
    kasan = reports[1]
    assert kasan.first.startswith("BUG: KASAN: slab-use-after-free in ckpt_obj_put")
    assert kasan.time == 7.500001
    assert any("Read of size 4" in ln for ln in kasan.lines)
    # said, not judged: a lockdep report outside the module fails the run too
    assert kasan.in_module and "(ckpt.ko in the trace)" in kasan.summary()
    assert not reports[2].in_module


def test_klog_clean_log_and_expected_taint_pass() -> None:
    text = (
        "[    5.0] ckpt-test: phase insmod\n"
        "[    5.1] ckpt: loading out-of-tree module taints kernel.\n"
        "[    5.2] ckpt: module verification failed: signature and/or required"
        " key missing - tainting kernel\n"
        "[    6.0] ckpt-test: start tests/vm/test_x.py::test_BUG_and_KASAN_names\n"
        "[    6.1] kasan: KernelAddressSanitizer initialized (generic)\n"
    )
    reports, marks = klog.parse_log(text)
    assert reports == []
    # a test's name that looks like a report is a marker, not a report
    assert marks[-1].where == "tests/vm/test_x.py::test_BUG_and_KASAN_names"


def test_klog_without_markers_everything_counts() -> None:
    # an old log, or a kernel that died before vm/guest.sh ran: no insmod
    # marker, so nothing can be put down to the boot
    reports, _ = klog.parse_log("[ 1.0] BUG: unable to handle page fault\n")
    assert [(r.kind, r.ours) for r in reports] == [("BUG", True)]


def test_klog_bare_call_trace_is_a_report() -> None:
    text = (
        "[ 5.0] ckpt-test: phase insmod\n"
        "[ 6.0] ckpt-test: start t::a\n"
        "[ 6.1] CPU: 1 PID: 3 Comm: python\n"
        "[ 6.2] Call Trace:\n"
        "[ 6.3]  <TASK>\n"
        "[ 6.4] Call Trace:\n"
    )
    reports, _ = klog.parse_log(text)
    assert [(r.kind, r.where) for r in reports] == [("call-trace", "t::a")]


def test_klog_dates_kmemleak_objects_by_their_age() -> None:
    _, marks = klog.parse_log(SAMPLE_DMESG)
    leaks = klog.parse_kmemleak(SAMPLE_KMEMLEAK, marks)
    # read at 25.000001: 17.5 s old = born at 7.5, during test_add[1];
    # 24 s old = born at 1.0, while booting (before insmod): not ours
    assert [(r.kind, r.where, r.ours) for r in leaks] == [
        ("kmemleak", "tests/vm/test_objhash.py::test_add[1]", True),
        ("kmemleak", klog.BOOT, False),
    ]
    assert leaks[0].first == "unreferenced object 0xffff888003a1c000 (size 64):"


def test_klog_cli_fails_and_lists_what_is_ours(tmp_path: Path) -> None:
    log = tmp_path / "vm-dmesg.txt"
    log.write_text(SAMPLE_DMESG)
    leaks = tmp_path / "vm-kmemleak.txt"
    leaks.write_text(SAMPLE_KMEMLEAK)
    r = subprocess.run(
        [sys.executable, str(KLOG), "--tsv", str(log), "--kmemleak", str(leaks)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1
    rows = [ln.split("\t") for ln in r.stdout.splitlines()]
    assert [row[:2] for row in rows] == [
        ["KASAN", "tests/vm/test_objhash.py::test_add[1]"],
        ["lockdep", "tests/vm/test_lifetime.py::test_close with spaces"],
        ["UBSAN", "tests/vm/test_policies.py::test_shift"],
        ["KFENCE", "tests/vm/test_policies.py::test_kfence"],
        ["atomic-sleep", "tests/vm/test_policies.py::test_sleep"],
        ["list-corruption", "tests/vm/test_policies.py::test_list"],
        ["WARNING", "rmmod"],
        ["kmemleak", "tests/vm/test_objhash.py::test_add[1]"],
    ]
    assert "ignored" in r.stderr and "drivers/foo.c" in r.stderr
    clean = tmp_path / "clean.txt"
    clean.write_text("[ 5.0] ckpt-test: phase insmod\n[ 6.0] all quiet\n")
    r = subprocess.run(
        [sys.executable, str(KLOG), str(clean)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (r.returncode, r.stdout) == (0, "")


def test_kmsg_marks_writes_one_line_per_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kmsg_marks

    kmsg = tmp_path / "kmsg"
    kmsg.touch()
    monkeypatch.setattr(kmsg_marks, "KMSG", str(kmsg))
    kmsg_marks.pytest_runtest_logstart("tests/vm/t.py::test_a[x\ny]", ("", 0, ""))
    kmsg_marks.mark("phase after-tests")
    assert kmsg.read_text() == (
        "<4>ckpt-test: start tests/vm/t.py::test_a[x y]\n<4>ckpt-test: phase after-tests\n"
    )
    # where /dev/kmsg cannot be opened, a test goes on unmarked
    monkeypatch.setattr(kmsg_marks, "KMSG", str(tmp_path / "no" / "kmsg"))
    kmsg_marks.mark("start t")


DEBUG_KERNEL_SH = ROOT / "vm" / "debug-kernel.sh"


def debug_kernel(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_")}
    return subprocess.run(
        [str(DEBUG_KERNEL_SH), *args],
        env={**base, "CKPT_DEBUG_SRC_VERSION": "6.1.192-3", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_debug_kernel_key_follows_the_fragment(tmp_path: Path) -> None:
    frag = tmp_path / "debug.config"
    frag.write_text((ROOT / "vm" / "debug.config").read_text())
    k1 = debug_kernel("--key", CKPT_DEBUG_CONFIG=str(frag))
    assert k1.returncode == 0, k1.stderr
    key = k1.stdout.strip()
    assert re.fullmatch(r"linux-source-6\.1-6\.1\.192-3-[0-9a-f]{12}", key), key
    # the same fragment: the same key, so the built tree is reused
    assert debug_kernel("--key", CKPT_DEBUG_CONFIG=str(frag)).stdout.strip() == key
    assert debug_kernel("--key").stdout.strip() == key
    # any change to it: another key, another build
    frag.write_text(frag.read_text() + "CONFIG_DEBUG_VM=y\n")
    k2 = debug_kernel("--key", CKPT_DEBUG_CONFIG=str(frag)).stdout.strip()
    assert k2 != key and k2.startswith("linux-source-6.1-6.1.192-3-")
    # and another source version too
    k3 = debug_kernel("--key", CKPT_DEBUG_SRC_VERSION="6.1.193-1").stdout.strip()
    assert k3 != key and "6.1.193-1" in k3


def test_debug_kernel_cache_is_configurable(tmp_path: Path) -> None:
    # a package that does not exist: nothing may try to install it
    env = {"CKPT_DEBUG_CACHE": str(tmp_path / "cache"), "CKPT_DEBUG_SRC_PKG": "no-such"}
    key = debug_kernel("--key", **env).stdout.strip()
    assert key.startswith("no-such-6.1.192-3-")
    tree = tmp_path / "cache" / key
    assert debug_kernel("--dir", **env).stdout.strip() == str(tree)
    # a tree built there is used as it is: no install, no unpack, no make
    tree.mkdir(parents=True)
    (tree / ".ckpt-built").touch()
    r = debug_kernel(**env)
    assert (r.returncode, r.stdout.strip()) == (0, str(tree)), r.stderr


def fake_tree(tmp_path: Path, release: str = "6.1.192-ckpt-debug") -> Path:
    tree = tmp_path / "linux"
    (tree / "include" / "config").mkdir(parents=True)
    (tree / "include" / "config" / "kernel.release").write_text(release + "\n")
    (tree / "arch" / "x86" / "boot").mkdir(parents=True)
    (tree / "arch" / "x86" / "boot" / "bzImage").touch()
    return tree


def test_kver_kernel_tree_is_the_one_kernel(tmp_path: Path) -> None:
    boot = fake_boot(tmp_path, *BOOKWORM)
    tree = fake_tree(tmp_path)
    for args in ((), ("--all",)):
        r = kver(boot, *args, CKPT_KERNEL_TREE=str(tree))
        assert (r.returncode, r.stdout) == (0, "6.1.192-ckpt-debug\n"), r.stderr
    r = kver(boot, CKPT_KERNEL_TREE=str(tree), CKPT_KVER="6.1.0-56-amd64")
    assert r.returncode == 1 and "CKPT_KERNEL_TREE is 6.1.192-ckpt-debug" in r.stderr
    r = kver(boot, CKPT_KERNEL_TREE=str(tmp_path / "nothing"))
    assert r.returncode == 1 and "not a built kernel tree" in r.stderr


ARGS_VNG = """#!/bin/sh
printf '%s\\n' "$@" >"$FAKE_DIR/vng.args"
"""


def test_run_sh_boots_the_kernel_tree(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path)
    venv, base = fake_venv(tmp_path, ARGS_VNG)
    env = {
        **base,
        "CKPT_VENV": str(venv),
        "CKPT_KERNEL_TREE": str(tree),
        "FAKE_DIR": str(tmp_path),
    }

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / "vm" / "run.sh"), "true"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # the module must be the one built for the tree's release
    r = run()
    assert r.returncode == 2
    assert "build/kmod-6.1.192-ckpt-debug/ckpt.ko is missing" in r.stderr
    env["CKPT_VM_NO_MODULE"] = "1"
    r = run()
    assert r.returncode == 0, r.stderr
    args = (tmp_path / "vng.args").read_text().splitlines()
    assert args[:2] == ["--run", str(tree)]
    # the test names must reach the kernel log unthrottled
    assert "printk.devkmsg=on log_buf_len=16M" in args
    (tree / "arch" / "x86" / "boot" / "bzImage").unlink()
    r = run()
    assert r.returncode == 2 and "build the tree first" in r.stderr


# stands in for a guest that ran vm/guest-tests.sh: its files in CKPT_RESULTS
GUEST_VNG = """#!/bin/sh
R=$CKPT_RESULTS
printf 'kernel=%s\\nkmemleak=1\\nt_start=1.0\\nt_end=2.0\\npytest=0\\nrmmod=0\\ntainted=12288\\nfinished=1\\n' \\
	"$FAKE_KVER" >"$R/vm-status"
cp "$FAKE_DIR/dmesg" "$R/vm-dmesg.txt"
cp "$FAKE_DIR/kmemleak" "$R/vm-kmemleak.txt"
echo '<testsuites><testsuite><testcase classname="t" name="ok"/></testsuite></testsuites>' >"$R/vm.xml"
"""


def run_tests_sh(tmp_path: Path, dmesg: str, kmemleak: str) -> tuple[int, str, str]:
    """vm/run-tests.sh over a fake guest: (status, vm-harness.xml, stderr)."""
    tree = fake_tree(tmp_path)
    venv, base = fake_venv(tmp_path, GUEST_VNG)
    (tmp_path / "dmesg").write_text(dmesg)
    (tmp_path / "kmemleak").write_text(kmemleak)
    results = tmp_path / "results"
    r = subprocess.run(
        [str(ROOT / "vm" / "run-tests.sh")],
        env={
            **base,
            "CKPT_VENV": str(venv),
            "CKPT_KERNEL_TREE": str(tree),
            "CKPT_VM_NO_MODULE": "1",
            "CKPT_RESULTS": str(results),
            "FAKE_DIR": str(tmp_path),
            "FAKE_KVER": "6.1.192-ckpt-debug",
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return r.returncode, (results / "vm-harness.xml").read_text(), r.stderr


def test_run_tests_sh_fails_on_a_report_and_names_the_test(tmp_path: Path) -> None:
    rc, harness, err = run_tests_sh(tmp_path, SAMPLE_DMESG, SAMPLE_KMEMLEAK)
    assert rc == 1
    assert 'name="kernel_booted"/>' in harness  # the tree's release booted
    assert 'name="kmemleak_scanned"/>' in harness
    assert "8 kernel report(s) in vm-dmesg.txt, first: KASAN in" in harness
    assert "KASAN in tests/vm/test_objhash.py::test_add[1]: BUG: KASAN:" in err
    assert "kmemleak in tests/vm/test_objhash.py::test_add[1]: unreferenced" in err
    klog_txt = (tmp_path / "results" / "vm-klog.txt").read_text()
    assert "Read of size 4" in klog_txt  # the report's lines, for people


def test_run_tests_sh_passes_a_clean_log(tmp_path: Path) -> None:
    clean = "[ 5.0] ckpt-test: phase insmod\n[ 6.0] ckpt-test: start t::a\n"
    rc, harness, err = run_tests_sh(tmp_path, clean, "")
    assert rc == 0, err
    assert "<failure" not in harness and 'name="dmesg_clean"/>' in harness
