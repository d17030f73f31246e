"""Unix sockets round trips: a tree holding sockets is checkpointed, its
facts read by the oracle (tests/vm/oracle.py: sock_diag and getsockopt,
not the module), killed, restarted, and compared: type, state, names, peers
as which fd of which task, shutdown, SO_PASSCRED, buffer sizes, queues.

The original tree is killed before restart (as ``pyckpt checkpoint
--kill`` does): a name, path or abstract, can be bound by one socket only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest
from oracle import facts, wait_for
from trees import Member, spawn

import pyckpt
from pyckpt.errors import CheckpointError

SLEEP = ["sleep", "1000"]
TYPES = [socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET]
TYPE_IDS = ["stream", "dgram", "seqpacket"]


@pytest.fixture
def sockdir() -> Iterator[str]:
    path = f"/tmp/unix-{os.getpid()}"
    os.makedirs(path, exist_ok=True)
    yield path
    for name in os.listdir(path):
        with contextlib.suppress(OSError):
            os.unlink(f"{path}/{name}")
    with contextlib.suppress(OSError):
        os.rmdir(path)


def roundtrip(body: Callable[[Member], None]) -> tuple[list, list, pyckpt.Restarted]:
    """Checkpoint, read the oracle (queues last: reading consumes them),
    kill, restart at the barrier; (facts before, with queues, restarted)."""
    tree = spawn(body)
    try:
        pids = tree.pids()
        image = pyckpt.checkpoint(pids[0]).image
        image = pyckpt.Image.from_bytes(image.to_bytes())  # through the records
        before = facts(pids)
        before_data = facts(pids, data=True)
    finally:
        tree.kill()
    r = pyckpt.restart(image, argv=SLEEP, release=False)
    try:
        new = [r.pids[p] for p in pids]
        after = facts(new)
        assert after == before
        assert facts(new, data=True) == before_data
    except BaseException:
        r.kill()
        raise
    return before, before_data, r


def check(body: Callable[[Member], None]) -> tuple[list, list]:
    """The round trip; the original's facts, without and with the queues."""
    before, before_data, r = roundtrip(body)
    r.kill()
    return before, before_data


def socket_facts(table: dict) -> dict:
    return {fd: f.extra for fd, f in table.items() if f.kind == "socket"}


@pytest.mark.parametrize("stype", TYPES, ids=TYPE_IDS)
def test_socketpair_shared_by_two_tasks_with_queues(stype: int) -> None:
    def root(t: Member) -> None:
        a, b = socket.socketpair(socket.AF_UNIX, stype)
        t.keep(a)
        t.keep(b)
        for m in (b"first", b"", b"third" * 300):
            a.send(m)
        b.send(b"back")
        os.dup2(a.fileno(), 20)  # the same socket on two fds

        def child(t: Member) -> None:  # inherits both ends
            a.close()

        t.fork(child)

    before, _ = check(root)
    s = socket_facts(before[0])
    assert len(s) == 3
    # the oracle sees the pair: root's a and b point at each other
    peers = {fd: f[3] for fd, f in s.items()}
    assert set(peers.values()) <= {(0, fd) for fd in s}


def test_listener_accepted_pending_and_abstract(sockdir: str) -> None:
    path = f"{sockdir}/srv"

    def root(t: Member) -> None:
        lst = t.keep(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        lst.bind(path)
        lst.listen(5)
        c1 = t.keep(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        c1.connect(path)
        s1, _ = lst.accept()
        t.keep(s1)
        c1.send(b"request")
        s1.send(b"reply" * 100)
        c2 = t.keep(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        c2.connect(path)  # waits in the queue, never accepted
        ab = t.keep(socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET))
        ab.bind(b"\0pyckpt-vm-abstract")
        ab.listen()

        def worker(t: Member) -> None:
            c3 = t.keep(socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET))
            c3.connect(b"\0pyckpt-vm-abstract")

        t.fork(worker)

    before, _ = check(root)
    s = socket_facts(before[0])
    names = sorted(f[2] for f in s.values())
    assert names.count(os.fsencode(path)) == 2  # listener and accepted
    assert any(f[3][0] == "pending" for f in s.values())
    assert any(f[3][0] == "pending" for f in socket_facts(before[1]).values())


@pytest.mark.parametrize("how", [socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR])
def test_shutdown_options_and_buffer_sizes(how: int) -> None:
    def root(t: Member) -> None:
        a, b = socket.socketpair()
        t.keep(a)
        t.keep(b)
        a.setsockopt(socket.SOL_SOCKET, 16, 1)  # SO_PASSCRED
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 300000)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 70000)
        a.send(b"before the shutdown")
        a.shutdown(how)

    before, _ = check(root)
    s = socket_facts(before[0])
    assert {f[4] for f in s.values()} != {0}  # shut somewhere
    assert any(f[5] for f in s.values())  # passcred


def test_dgram_server_named_and_unnamed_clients(sockdir: str) -> None:
    def root(t: Member) -> None:
        srv = t.keep(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        srv.bind(f"{sockdir}/log")
        named = t.keep(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        named.bind(f"{sockdir}/client")
        named.connect(f"{sockdir}/log")
        anon = t.keep(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        anon.connect(f"{sockdir}/log")
        named.send(b"from named")
        anon.send(b"from anon")
        named.send(b"")

    _, before = check(root)
    (queue,) = [f[-1] for f in socket_facts(before[0]).values() if f[-1]]
    assert queue == (
        (b"from named", f"{sockdir}/client"),
        (b"from anon", ""),
        (b"", f"{sockdir}/client"),
    )


@pytest.mark.parametrize("stype", TYPES, ids=TYPE_IDS)
def test_peer_gone_keeps_its_data(stype: int) -> None:
    def root(t: Member) -> None:
        a, b = socket.socketpair(socket.AF_UNIX, stype)
        t.keep(b)
        a.send(b"last words")
        a.close()

    before, _ = check(root)
    (f,) = socket_facts(before[0]).values()
    assert f[3] == "gone"


def test_peer_outside_refused_then_external() -> None:
    outside, inside = socket.socketpair()
    try:

        def root(t: Member) -> None:
            pass

        tree = spawn(root, pass_fds=[inside.fileno()])
        fd = inside.fileno()
        inside.close()  # the tree holds it, the test its peer
        try:
            pid = tree.pids()[0]
            with pytest.raises(CheckpointError) as e:
                pyckpt.checkpoint(pid)
            msg = str(e.value)
            ino = os.fstat(outside.fileno()).st_ino
            assert f"task {pid}" in msg and f"fd {fd}" in msg
            assert f"peer socket:[{ino}] is outside the tree" in msg
            assert f"pid {os.getpid()} fd {outside.fileno()}" in msg
            image = pyckpt.checkpoint(pid, allow_external=True).image
        finally:
            tree.kill()
        assert any("external" in err.msg for err in image.errors)
        with pytest.warns(RuntimeWarning, match="restarted with its peer gone"):
            r = pyckpt.restart(image, argv=SLEEP, release=False)
        try:
            (table,) = facts([r.pids[pid]])
            assert table[fd].extra[3] == "gone"
        finally:
            r.kill()
    finally:
        outside.close()


def test_fds_in_flight_refused() -> None:
    def root(t: Member) -> None:
        a, b = socket.socketpair()
        t.keep(a)
        t.keep(b)
        r, w = os.pipe()
        a.sendmsg(
            [b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, r.to_bytes(4, "little"))]
        )
        os.close(r)
        os.close(w)

    tree = spawn(root)
    try:
        with pytest.raises(CheckpointError, match=r"fd\(s\) in flight"):
            pyckpt.checkpoint(tree.root)
        assert tree.pids()  # thawed, alive
    finally:
        tree.kill()


def test_tcp_refused_or_external() -> None:
    def root(t: Member) -> None:
        lst = t.keep(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        c = t.keep(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        c.connect(lst.getsockname())
        t.report(role="root", fd=c.fileno())

    tree = spawn(root)
    try:
        with pytest.raises(CheckpointError) as e:
            pyckpt.checkpoint(tree.root)
        fd = tree.role("root")["fd"]
        assert f"task {tree.root}" in str(e.value)
        # the kind that refuses it first (Kind.problem), then what it is
        assert f"fd {fd}: unix socket: TCP (AF_INET) socket" in str(e.value)
        image = pyckpt.checkpoint(tree.root, allow_external=True).image
    finally:
        tree.kill()
    with pytest.warns(RuntimeWarning):
        r = pyckpt.restart(image, argv=SLEEP, release=False)
    try:
        (table,) = facts([r.pids[tree.root]])
        assert table[fd].kind == "socket" and table[fd].extra[3] == "gone"
    finally:
        r.kill()


# ---- a user's tree: an asyncio server and its worker over a socket pair ----

SERVER = textwrap.dedent(
    """
    import asyncio, os, socket, stat, subprocess, sys
    PAIR = 5  # the server's end of the pair; the worker's is fd 6 in it
    LOG = sys.argv[1]

    def ours(fd):
        try:
            return stat.S_ISSOCK(os.fstat(fd).st_mode)
        except OSError:
            return False

    async def main():
        if ours(PAIR):  # restarted: the pair (and its queue) is inherited
            end = socket.socket(fileno=PAIR)
        else:
            end, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            os.dup2(end.fileno(), PAIR)
            end.close()
            end = socket.socket(fileno=PAIR)
            os.dup2(theirs.fileno(), 6)
            theirs.close()
            subprocess.Popen([sys.executable, __file__, LOG, "worker"],
                             pass_fds=[6], close_fds=True)
            os.close(6)
            for i in range(5):  # queued: the worker reads only when told
                end.send(b"job %d" % i)
        os.set_inheritable(PAIR, True)
        end.setblocking(False)
        loop = asyncio.get_running_loop()
        with open(LOG, "a") as f:
            f.write("server up\\n")
        while True:
            reply = await loop.sock_recv(end, 100)
            with open(LOG, "a") as f:
                f.write("server got %s\\n" % reply.decode())

    def worker():
        w = socket.socket(fileno=6)
        os.set_inheritable(6, True)
        go = LOG + ".go"
        while not os.path.exists(go):
            import time; time.sleep(0.05)
        while True:
            job = w.recv(100)
            w.send(b"done " + job)

    if sys.argv[2:] == ["worker"]:
        worker()
    else:
        asyncio.run(main())
    """
)


def test_asyncio_server_and_worker_with_queued_messages(tmp_path) -> None:
    prog = tmp_path / "server.py"
    prog.write_text(SERVER)
    log = str(tmp_path / "log")
    # no stdio: /dev/null and terminals are another kind's (issue 10, wt10d)
    p = subprocess.Popen(
        [sys.executable, str(prog), log],
        close_fds=True,
        start_new_session=True,
        preexec_fn=_close_stdio,
    )
    try:
        wait_for(lambda: os.path.exists(log) and len(_children(p.pid)) == 1, 30)
        # the jobs sit in the worker's queue (it waits for the go file)
        wait_for(lambda: _proc_state(_children(p.pid)[0]) == "S", 30)
        pids = [p.pid, *_children(p.pid)]
        image = pyckpt.checkpoint(p.pid).image
        before = facts(pids)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, 9)
        p.wait()
    worker_fds = socket_facts(before[1])
    assert worker_fds[6][-1] > 0  # bytes queued for the worker
    r = pyckpt.restart(image, release=False)
    try:
        new = [r.pids[x] for x in pids]
        assert facts(new) == before
        with open(log, "w"):
            pass
        open(log + ".go", "w").close()
        r.release()
        # the worker, exec'd again, reads the jobs queued before the
        # checkpoint; the server gets the answers over the restored pair
        wait_for(lambda: _log(log).count("server got done job") == 5, 30)
        assert [f"server got done job {i}" for i in range(5)] == [
            ln for ln in _log(log).splitlines() if ln.startswith("server got")
        ]
    finally:
        r.kill()


def _close_stdio() -> None:
    for fd in (0, 1, 2):
        os.close(fd)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def _log(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
