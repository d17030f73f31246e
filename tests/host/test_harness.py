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


def run_sh(
    tmp_path: Path, sleep: int, rc: int, timeout: int
) -> tuple[subprocess.CompletedProcess[str], float, list[int]]:
    """vm/run.sh with a fake vng: its waiting, timeout and exit status."""
    boot = subprocess.run([str(KVER_SH)], capture_output=True, text=True, check=False)
    kv = boot.stdout.strip()
    if boot.returncode or not Path(f"/lib/modules/{kv}/kernel").is_dir():
        pytest.skip("no Debian kernel installed here (make setup installs one)")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "vng").write_text(FAKE_VNG)
    (venv / "bin" / "vng").chmod(0o755)
    base = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_")}
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
