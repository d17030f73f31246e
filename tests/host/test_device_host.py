"""pyckpt's behaviour that needs no module: errors, lifetime, helpers."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import pyckpt
from pyckpt import CkptError, Context, DeviceMissingError, ErrorEntry, Policy
from pyckpt.abi import ffi
from pyckpt.device import _chunks

ROOT = Path(__file__).resolve().parents[2]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_missing_device_is_a_clear_error(tmp_path: Path) -> None:
    path = str(tmp_path / "ckpt")
    with pytest.raises(DeviceMissingError) as info:
        Context(path)
    e = info.value
    assert isinstance(e, FileNotFoundError)
    assert isinstance(e, CkptError)
    assert e.errno == errno.ENOENT
    assert path in str(e)
    assert "vm/run.sh" in str(e)


def test_not_a_ckpt_device_raises_enotty() -> None:
    # any other file takes the ioctls as unknown: ENOTTY, no log to read
    with Context("/dev/null") as c, pytest.raises(CkptError) as info:
        c.stats()
    e = info.value
    assert e.errno == errno.ENOTTY
    assert e.ioctl == "CKPT_IOC_STATS"
    assert e.entries == []
    assert "ENOTTY" in str(e)


def test_failed_setup_in_constructor_closes_the_fd() -> None:
    before = open_fds()
    with pytest.raises(CkptError) as info:
        Context("/dev/null", policy=Policy.FREE_UPFRONT)
    assert info.value.ioctl == "CKPT_IOC_SETUP"
    assert open_fds() == before


def test_close_is_idempotent() -> None:
    before = open_fds()
    c = Context("/dev/null")
    assert not c.closed
    c.close()
    c.close()
    assert c.closed
    assert open_fds() == before
    with pytest.raises(ValueError, match="closed"):
        c.fileno()
    with pytest.raises(ValueError, match="closed"):
        c.release()
    assert "closed" in repr(c)


def test_context_manager_closes_on_error() -> None:
    before = open_fds()
    with pytest.raises(RuntimeError), Context("/dev/null"):
        raise RuntimeError
    assert open_fds() == before


def test_error_text_names_everything() -> None:
    entry = ErrorEntry(
        seq=3,
        err=-errno.EEXIST,
        objref=5,
        func="ckpt_obj_insert",
        msg="test: objref already used",
    )
    e = CkptError(errno.EEXIST, "CKPT_IOC_INSERT_BATCH", [entry], done=2)
    text = str(e)
    for part in (
        "CKPT_IOC_INSERT_BATCH",
        "EEXIST",
        "ckpt_obj_insert",
        "objref 5",
        "objref already used",
        "after 2 item(s)",
    ):
        assert part in text, part
    assert entry.errno == errno.EEXIST
    assert isinstance(e, OSError)
    assert e.errno == errno.EEXIST


def test_error_pickles_with_its_fields() -> None:
    entry = ErrorEntry(1, -errno.ENOENT, 9, "ckpt_obj_fetch", "file: no such objref")
    e = CkptError(errno.ENOENT, "CKPT_IOC_FETCH_BATCH", [entry], done=1, results=[7])
    back = pickle.loads(pickle.dumps(e))
    assert (back.errno, back.ioctl, back.entries, back.done, back.results) == (
        errno.ENOENT,
        "CKPT_IOC_FETCH_BATCH",
        [entry],
        1,
        [7],
    )


def test_stats_fields_follow_the_struct() -> None:
    names = [f for f, _ in ffi.typeof("struct ckpt_stats").fields]
    assert list(pyckpt.Stats.__dataclass_fields__) == names


def test_chunks_cover_everything_in_order() -> None:
    items = list(range(10))
    got = list(_chunks(items))
    assert [start for start, _ in got] == [0]
    from pyckpt import device

    old = device.BATCH_MAX
    device.BATCH_MAX = 4
    try:
        got = list(_chunks(items))
    finally:
        device.BATCH_MAX = old
    assert [(s, list(c)) for s, c in got] == [
        (0, [0, 1, 2, 3]),
        (4, [4, 5, 6, 7]),
        (8, [8, 9]),
    ]


def test_kcmp_file_and_pidfd_getfd() -> None:
    r, w = os.pipe()
    d = os.dup(r)
    me = os.getpid()
    pidfd = os.pidfd_open(me)
    try:
        got = pyckpt.pidfd_getfd(pidfd, r)
        try:
            assert pyckpt.kcmp_file(me, r, me, d)
            assert pyckpt.kcmp_file(me, r, me, got)
            assert not pyckpt.kcmp_file(me, r, me, w)
            assert not os.get_inheritable(got)
        finally:
            os.close(got)
        with pytest.raises(OSError) as info:
            pyckpt.pidfd_getfd(pidfd, 1_000_000)
        assert info.value.errno == errno.EBADF
    finally:
        for fd in (r, w, d, pidfd):
            os.close(fd)


@pytest.mark.skipif(os.path.exists(pyckpt.DEVICE), reason="/dev/ckpt exists here")
def test_vm_tests_skip_cleanly_without_the_device() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "vm"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "passed" not in out and "failed" not in out and "error" not in out, out
    assert "needs /dev/ckpt" in out and "vm/run.sh" in out, out
