"""Restart gives a user's tree nothing more than it had (issue 19): a task
whose exec was privileged is exec'd again as it was started, `-- CMD` is
found on the restarter's PATH, the cwd is the directory that was
checkpointed, and root's terminal is not handed to another user's tasks.

Each tree belongs to uid 65534 and is checkpointed and killed by root; the
user then changes only what it owns; root restarts with the defaults.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import warnings
from collections.abc import Iterator

import psutil
import pytest
from oracle import wait_for

import pyckpt
from pyckpt.errors import RestartError

NOBODY = 65534
SLEEP = ["/usr/bin/sleep", "1000"]


@pytest.fixture
def home() -> Iterator[str]:
    """A directory of the user's own (0755, owned by 65534)."""
    d = tempfile.mkdtemp(prefix="home.", dir="/tmp")
    os.chmod(d, 0o755)
    os.chown(d, NOBODY, NOBODY)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def as_user(argv: list[str], env: dict[str, str], cwd: str = "/") -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def checkpoint_and_kill(p: subprocess.Popen) -> pyckpt.Image:
    image = pyckpt.checkpoint(p.pid).image
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    return image


def uids(pid: int) -> list[int]:
    return list(psutil.Process(pid).uids()) if psutil.pid_exists(pid) else []


_NR_PAUSE = 34  # x86_64


def in_pause(pid: int) -> bool:
    """Whether pid sleeps in pause(2): its program ran past the loader
    (constructors, LD_PRELOAD included) and main's setresuid()."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split()[0] == str(_NR_PAUSE)
    except (OSError, IndexError):
        return False


def gcc(out: str, src: str, *flags: str) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: the setuid test builds its programs")
    c = out + ".c"
    with open(c, "w") as f:
        f.write(src)
    subprocess.run(["gcc", "-O1", *flags, "-o", out, c], check=True)


SUID = r"""
#define _GNU_SOURCE
#include <unistd.h>
/* sudo's front end while its command runs: root in all three ids */
int main(void) { if (setresuid(0, 0, 0)) return 1; for (;;) pause(); }
"""

PRELOAD = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void)
{
	FILE *f = fopen(MARK, "a");
	if (f) { fprintf(f, "%d\n", (int)geteuid()); fclose(f); }
}
"""


def test_setuid_task_is_not_exec_as_root_with_the_users_environment(
    home: str,
) -> None:
    """A setuid-root program that made itself root (r/e/s uid 0), started
    by the user's shell with LD_PRELOAD in its environment: the loader
    ignored it at the setuid exec. Restarted, the task is exec'd again by
    a process with its parent's ids, so the kernel applies the setuid bit
    and AT_SECURE again: the user's library is never loaded as root."""
    # not /var/tmp: nosuid in the guest
    bindir = tempfile.mkdtemp(prefix="suid.", dir="/tmp")
    try:
        os.chmod(bindir, 0o755)
        prog = os.path.join(bindir, "suidprog")
        gcc(prog, SUID)
        os.chmod(prog, 0o4755)
        mark = os.path.join(home, "mark")
        lib = os.path.join(home, "evil.so")
        gcc(lib, PRELOAD, "-shared", "-fPIC", f'-DMARK="{mark}"')
        os.chown(lib, NOBODY, NOBODY)
        env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": lib}
        p = as_user(["/bin/sh", "-c", f"{prog}; :"], env)
        try:
            wait_for(lambda: len(psutil.Process(p.pid).children()) == 1, timeout=60)
            child = psutil.Process(p.pid).children()[0].pid
            wait_for(lambda: in_pause(child), timeout=60)
            assert uids(child) == [0, 0, 0]
            image = checkpoint_and_kill(p)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        task = next(t for t in image.tasks if t.pid == child)
        assert task.at_secure and (task.ruid, task.euid) == (0, 0)
        with open(mark) as f:
            assert "0" not in f.read().split()  # the setuid exec ignored it
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            r = pyckpt.restart(image, release=False)
        with r:
            again = r.pids[child]
            r.release()
            # past the loader and main's setresuid(0, 0, 0): the setuid bit
            # made it root again, as when it was started
            wait_for(lambda: in_pause(again), timeout=60)
            assert uids(again) == [0, 0, 0]
            with open(mark) as f:
                assert "0" not in f.read().split(), "the user's library ran as root"
        assert any("exec'd again with the ids" in str(w.message) for w in got)
    finally:
        shutil.rmtree(bindir, ignore_errors=True)


def test_cmd_is_found_on_the_restarters_path(home: str) -> None:
    """`restart -- sleep`: sleep is the restarter's, not what the task's
    recorded PATH (which its owner chose) leads to."""
    fake = os.path.join(home, "sleep")
    mark = os.path.join(home, "mark")
    with open(fake, "w") as f:
        f.write(f"#!/bin/sh\necho fake > {mark}\nexec /usr/bin/sleep 1000\n")
    os.chmod(fake, 0o755)
    p = as_user(SLEEP, {"PATH": f"{home}:/usr/bin:/bin"})
    image = checkpoint_and_kill(p)
    with pyckpt.restart(image, argv=["sleep", "1000"], release=False) as r:
        new = r.pids[p.pid]
        r.release()
        wait_for(lambda: psutil.Process(new).exe() == "/usr/bin/sleep", timeout=60)
        assert not os.path.exists(mark)


def test_cwd_replaced_by_another_directory_is_refused(home: str) -> None:
    """The user renames its cwd away and makes a new directory there:
    restart refuses instead of starting the task somewhere else;
    relocate=True accepts another directory of the same owner and mode."""
    work = os.path.join(home, "work")
    os.mkdir(work, 0o755)
    os.chown(work, NOBODY, NOBODY)
    p = as_user(SLEEP, {"PATH": "/usr/bin"}, cwd=work)
    image = checkpoint_and_kill(p)
    assert image.tasks[0].cwd_ino == os.stat(work).st_ino
    os.rename(work, work + ".old")
    os.mkdir(work, 0o755)
    os.chown(work, NOBODY, NOBODY)
    before = {c.pid for c in psutil.Process().children()}
    with pytest.raises(RestartError, match="not the directory checkpointed"):
        pyckpt.restart(image, release=False)
    assert {c.pid for c in psutil.Process().children()} <= before
    with pyckpt.restart(image, release=False, relocate=True) as r:
        assert os.readlink(f"/proc/{r.pids[p.pid]}/cwd") == work


def test_another_users_tree_does_not_get_roots_terminal() -> None:
    """A user's task on a terminal, restarted by root with the default
    stdio: its fds 0-2 become /dev/null with a warning, not root's own
    terminal; --stdio inherit still hands it over when asked for."""
    master, slave = os.openpty()
    master2, slave2 = os.openpty()
    try:
        p = subprocess.Popen(
            SLEEP,
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            env={},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        image = checkpoint_and_kill(p)
        saved = [os.dup(i) for i in range(3)]
        try:
            for i in range(3):
                os.dup2(slave2, i)
            with pytest.warns(RuntimeWarning) as got:
                r = pyckpt.restart(image, release=False)
            with r:
                assert any("another user's terminal" in str(w.message) for w in got), [
                    str(w.message) for w in got
                ]
                new = r.pids[p.pid]
                null = os.stat("/dev/null").st_rdev
                for fd in range(3):
                    assert os.stat(f"/proc/{new}/fd/{fd}").st_rdev == null
            with pyckpt.restart(image, release=False, stdio="inherit") as r:
                new = r.pids[p.pid]
                assert os.stat(f"/proc/{new}/fd/0").st_rdev == os.fstat(slave2).st_rdev
        finally:
            for i, s in enumerate(saved):
                os.dup2(s, i)
                os.close(s)
    finally:
        for fd in (master, slave, master2, slave2):
            os.close(fd)
