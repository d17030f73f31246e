"""Unix sockets on the host: saved without consuming their queues, made
again by make_sockets() with the same peers, names, options, queues and
shutdown state (no module needed: sockets work on any host)."""

from __future__ import annotations

import copy
import os
import socket
import tempfile
from collections.abc import Iterator

import pytest
from test_image import build, find, first, patch, raises, specs

from pyckpt.abi import HdrType
from pyckpt.image import Image, ImageError, Record
from pyckpt.kinds import unix
from pyckpt.kinds.unix import (
    RCV_SHUTDOWN,
    SEND_SHUTDOWN,
    TCP_ESTABLISHED,
    TCP_LISTEN,
    InFlight,
    Msg,
    UnixError,
    make_sockets,
    save_all,
)
from pyckpt.show import summary

TYPES = [socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET]


@pytest.fixture
def keep() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


@pytest.fixture
def tmpdir_path() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as d:
        yield d


def fds_of(*socks: socket.socket) -> dict[int, int]:
    return {i + 1: s.fileno() for i, s in enumerate(socks)}


def remake(
    socks: tuple[socket.socket, ...],
    keep: list[socket.socket],
    saved: dict[int, unix.Unix] | None = None,
) -> tuple[dict[int, unix.Unix], list[socket.socket]]:
    """Save (unless given), close the originals (as a killed tree), make
    again.  (Saved once: a zero-length datagram, once peeked, is skipped by
    every later MSG_PEEK at an offset, see unix.py.)"""
    if saved is None:
        saved, problems = save_all(fds_of(*socks))
        assert not problems
    for s in socks:
        s.close()
    new = make_sockets(saved)
    out = [socket.socket(fileno=new[i + 1]) for i in range(len(socks))]
    keep.extend(out)
    return saved, out


def drain(s: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            data = s.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return out
        if not data and s.type == socket.SOCK_STREAM:
            out.append(b"<eof>")
            return out
        out.append(data)


def peer_ino(s: socket.socket) -> int:
    return unix.diag([os.fstat(s.fileno()).st_ino])[os.fstat(s.fileno()).st_ino].peer


@pytest.mark.parametrize("stype", TYPES, ids=unix.TYPES.get)
def test_socketpair_queues_survive_and_stay_queued(
    stype: int, keep: list[socket.socket]
) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, stype)
    msgs = [b"one", b"", b"three" * 1000] if stype != socket.SOCK_STREAM else [b"x"]
    if stype == socket.SOCK_STREAM:
        msgs = [b"hello ", b"world" * 5000]
    for m in msgs:
        a.send(m)
    b.send(b"back")
    saved, _ = save_all(fds_of(a, b))
    # nothing was consumed: the original queue still reads the same
    joined = b"".join(msgs)
    got = saved[2].msgs
    if stype == socket.SOCK_STREAM:
        assert b"".join(m.data for m in got) == joined
    else:
        assert [m.data for m in got] == msgs
    assert saved[1].peer == 2 and saved[2].peer == 1
    assert saved[1].msgs == [Msg(b"back")]
    (na, nb) = remake((a, b), keep, saved)[1]
    assert peer_ino(na) == os.fstat(nb.fileno()).st_ino
    if stype == socket.SOCK_STREAM:
        assert b"".join(drain(nb)) == joined
    else:
        assert drain(nb) == msgs
    assert drain(na) == [b"back"]
    na.send(b"after")
    assert nb.recv(10) == b"after"


def test_original_peek_offset_is_put_back(keep: list[socket.socket]) -> None:
    a, b = socket.socketpair()
    keep += [a, b]
    a.send(b"abcdef")
    b.setsockopt(socket.SOL_SOCKET, unix.SO_PEEK_OFF, 2)
    save_all(fds_of(a, b))
    assert b.getsockopt(socket.SOL_SOCKET, unix.SO_PEEK_OFF) == 2
    assert b.recv(10, socket.MSG_PEEK) == b"cdef"  # its own offset still works


def test_big_datagram_is_peeked_whole(keep: list[socket.socket]) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    keep += [a, b]
    big = os.urandom(unix.PEEK_BUF + 1000)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    a.send(big)
    a.send(b"next")
    saved, _ = save_all(fds_of(a, b))
    assert [m.data for m in saved[2].msgs] == [big, b"next"]


@pytest.mark.parametrize("how", [socket.SHUT_WR, socket.SHUT_RD, socket.SHUT_RDWR])
def test_shutdown_state(how: int, keep: list[socket.socket]) -> None:
    a, b = socket.socketpair()
    a.send(b"before")
    a.shutdown(how)
    saved, (na, nb) = remake((a, b), keep)
    bits = {socket.SHUT_RD: RCV_SHUTDOWN, socket.SHUT_WR: SEND_SHUTDOWN}
    want = bits.get(how, RCV_SHUTDOWN | SEND_SHUTDOWN)
    assert saved[1].shutdown == want
    for s, u in ((na, saved[1]), (nb, saved[2])):
        ino = os.fstat(s.fileno()).st_ino
        assert unix.diag([ino])[ino].shutdown == u.shutdown
    assert nb.recv(100) == b"before"


def test_peer_gone_reads_data_then_eof(keep: list[socket.socket]) -> None:
    a, b = socket.socketpair()
    a.send(b"last words")
    a.close()
    saved, problems = save_all({1: b.fileno()})
    assert not problems and saved[1].peer_gone
    b.close()
    (nb,) = [socket.socket(fileno=fd) for fd in make_sockets(saved).values()]
    keep.append(nb)
    assert drain(nb) == [b"last words", b"<eof>"]
    with pytest.raises(BrokenPipeError):
        nb.send(b"x")


def test_peer_outside_is_refused_naming_it(keep: list[socket.socket]) -> None:
    a, b = socket.socketpair()
    keep += [a, b]
    saved, problems = save_all({1: a.fileno()})
    assert saved == {}
    ino = os.fstat(b.fileno()).st_ino
    assert f"peer socket:[{ino}] is outside the tree" in problems[1]
    assert f"pid {os.getpid()} fd {b.fileno()}" in problems[1]
    saved, problems = save_all({1: a.fileno()}, allow_external=True)
    assert not problems and saved[1].external_peer and saved[1].peer_gone


def test_fds_in_flight_are_refused(keep: list[socket.socket]) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    keep += [a, b]
    r, w = os.pipe()
    a.sendmsg(
        [b"carrying"],
        [
            (
                socket.SOL_SOCKET,
                socket.SCM_RIGHTS,
                bytes(
                    memoryview(
                        bytearray(r.to_bytes(4, "little") + w.to_bytes(4, "little"))
                    )
                ),
            )
        ],
    )
    os.close(r)
    os.close(w)
    before = set(os.listdir("/proc/self/fd"))
    _saved, problems = save_all(fds_of(a, b))
    assert "fd(s) in flight" in problems[2]
    assert set(os.listdir("/proc/self/fd")) == before  # the peeked fds closed
    # still queued, fds and all
    data, anc, _, _ = b.recvmsg(100, socket.CMSG_SPACE(8))
    assert data == b"carrying" and anc


def test_in_flight_raises_from_peek(keep: list[socket.socket]) -> None:
    a, b = socket.socketpair()
    keep += [a, b]
    a.sendmsg(
        [b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, (0).to_bytes(4, "little"))]
    )
    with pytest.raises(InFlight):
        unix.peek_queue(b, socket.SOCK_STREAM)


def test_options_kept(keep: list[socket.socket]) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setsockopt(socket.SOL_SOCKET, unix.SO_PASSCRED, 1)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 50000)
    want = [
        (
            s.getsockopt(socket.SOL_SOCKET, unix.SO_PASSCRED),
            s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        )
        for s in (a, b)
    ]
    _, new = remake((a, b), keep)
    got = [
        (
            s.getsockopt(socket.SOL_SOCKET, unix.SO_PASSCRED),
            s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        )
        for s in new
    ]
    assert got == want


@pytest.mark.parametrize("accepted_first", [False, True], ids=["client", "accepted"])
@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_listener_accepted_and_pending_connections(
    abstract: bool, accepted_first: bool, tmpdir_path: str, keep: list[socket.socket]
) -> None:
    name: str | bytes = (
        b"\0pyckpt-test-%d" % os.getpid() if abstract else f"{tmpdir_path}/sock"
    )
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(name)
    lst.listen(7)
    c1 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c1.connect(name)
    s1, _ = lst.accept()
    c1.send(b"request")
    s1.send(b"reply")
    c2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c2.connect(name)  # pending: never accepted
    if accepted_first:  # made in the other order: the same result
        saved, (nl, ns1, nc1, nc2) = remake((lst, s1, c1, c2), keep)
    else:
        saved, (nl, nc1, ns1, nc2) = remake((lst, c1, s1, c2), keep)
    assert saved[1].state == TCP_LISTEN and saved[1].backlog == 7
    assert saved[4].listener == 1 and saved[4].peer == 0
    assert saved[2].peer == 3 and saved[3].peer == 2
    assert ns1.getsockname() == nl.getsockname() == name
    assert nc1.getpeername() == name
    assert ns1.recv(100) == b"request" and nc1.recv(100) == b"reply"
    nl.setblocking(False)
    s2, _ = nl.accept()  # the pending one is in the queue
    keep.append(s2)
    with pytest.raises(BlockingIOError):
        nl.accept()
    nc2.send(b"late")
    assert s2.recv(10) == b"late"


def test_stale_path_replaced_live_one_refused(
    tmpdir_path: str, keep: list[socket.socket]
) -> None:
    path = f"{tmpdir_path}/srv"
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(path)
    lst.listen()
    saved, problems = save_all({1: lst.fileno()})
    assert not problems and saved[1].vfs_ino == os.stat(path).st_ino
    # still listening: restart refuses to take the path over
    with pytest.raises(UnixError, match="in use"):
        make_sockets(saved)
    lst.close()  # the file stays, stale
    (fd,) = make_sockets(saved).values()
    new = socket.socket(fileno=fd)
    keep.append(new)
    assert new.getsockname() == path
    # another file at the path: refused, left alone
    new.close()
    os.unlink(path)
    with open(path, "w"):
        pass
    with pytest.raises(UnixError, match="not a socket"):
        make_sockets(saved)
    assert os.path.isfile(path)


@pytest.mark.parametrize("bound", [False, True], ids=["unnamed", "named"])
def test_dgram_server_with_clients(
    bound: bool, tmpdir_path: str, keep: list[socket.socket]
) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(f"{tmpdir_path}/log")
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if bound:
        cli.bind(f"{tmpdir_path}/cli")
    cli.connect(f"{tmpdir_path}/log")
    cli.send(b"m1")
    cli.send(b"m2")
    saved, (nsrv, ncli) = remake((srv, cli), keep)
    assert saved[2].peer == 1 and saved[1].peer == 0
    assert saved[2].state == TCP_ESTABLISHED
    got = [nsrv.recvfrom(10) for _ in range(2)]
    frm = f"{tmpdir_path}/cli" if bound else None
    assert [g[0] for g in got] == [b"m1", b"m2"]
    assert all((g[1] or None) == frm for g in got)
    ncli.send(b"m3")
    assert nsrv.recv(10) == b"m3"


def test_make_failure_closes_everything(tmpdir_path: str) -> None:
    before = set(os.listdir("/proc/self/fd"))
    bad = {
        1: unix.Unix(type=socket.SOCK_STREAM),
        2: unix.Unix(type=socket.SOCK_STREAM, state=TCP_ESTABLISHED, peer=9),
    }
    with pytest.raises(UnixError, match="peer 9 is not in the image"):
        make_sockets(bad)
    assert set(os.listdir("/proc/self/fd")) == before


def test_listener_with_a_client_outside_is_refused(
    tmpdir_path: str, keep: list[socket.socket]
) -> None:
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(f"{tmpdir_path}/l")
    lst.listen()
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(f"{tmpdir_path}/l")
    keep += [lst, c]
    _, problems = save_all({1: lst.fileno()})
    assert "1 connection(s) from outside the tree" in problems[1]
    assert f"pid {os.getpid()} fd {c.fileno()}" in problems[1]
    # the client alone: waiting on a listener outside
    _, problems = save_all({1: c.fileno()})
    assert "waiting in the queue of a listener outside the tree" in problems[1]


@pytest.mark.parametrize("stype", TYPES, ids=unix.TYPES.get)
def test_peer_gone_every_type(stype: int, keep: list[socket.socket]) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, stype)
    a.send(b"m")
    a.close()
    saved, problems = save_all({1: b.fileno()})
    assert not problems and saved[1].peer_gone and saved[1].msgs == [Msg(b"m")]
    b.close()
    (nb,) = [socket.socket(fileno=fd) for fd in make_sockets(saved).values()]
    keep.append(nb)
    assert nb.recv(10) == b"m"
    ino = os.fstat(nb.fileno()).st_ino
    assert unix.diag([ino])[ino].peer == 0  # a peer, dead
    with pytest.raises(OSError):
        nb.send(b"x", socket.MSG_DONTWAIT)


# ---- the UNIX and UNIX_MSG records (moved from test_image.py) ----------------


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("objref", 0, "objref 0 <= 0"),
        ("peer", 14, "peer 14: not another file's objref"),
        ("peer", -1, "peer -1: not another file's objref"),
        ("listener", -5, "listener -5: not another"),
        ("type", 3, "type 3: not stream, dgram or seqpacket"),
        ("state", 2, "state 2 unknown"),
        ("flags", 0x80, "unknown flags 0x80"),
        ("shutdown", 4, "shutdown 0x4 unknown"),
        ("family", 2, "family 2: not AF_UNIX nor a peer gone"),
        ("state", 10, "listening: a peer, listener, queue or no name"),
        ("state", 7, "unconnected with a peer, listener or a peer gone"),
        ("flags", 0x2, "connected: not exactly one of peer, listener, gone"),
        ("flags", 0x5, "external peer without PEER_GONE"),
        ("nr_msgs", 2**31, "nr_msgs 2147483648 above CKPT_UNIX_MSGS_MAX"),
        ("name_len", 109, "name_len 109 exceeds CKPT_UNIX_NAME_MAX"),
    ],
)
def test_unix_record_checks(
    data: bytes, records: list[Record], field: str, value: int, fragment: str
) -> None:
    rec = first(records, HdrType.UNIX)
    raises(patch(data, rec, field, value), rec.offset, f"UNIX record: {fragment}")


def test_unix_msg_checks(data: bytes, records: list[Record]) -> None:
    msg = first(records, HdrType.UNIX_MSG)
    raises(patch(data, msg, "objref", 0), msg.offset, "UNIX_MSG record: objref 0")
    raises(
        patch(data, msg, "objref", 15),
        msg.offset,
        "UNIX_MSG record: objref 15 differs from its UNIX's 14",
    )
    raises(
        patch(data, msg, "data_len", 2**32 - 1),
        msg.offset,
        "data_len 4294967295 exceeds CKPT_UNIX_DATA_MAX",
    )
    raises(
        patch(data, msg, "addr_len", 200),
        msg.offset,
        "addr_len 200 exceeds CKPT_UNIX_NAME_MAX",
    )


def test_unix_grammar(data: bytes, records: list[Record]) -> None:
    sp = specs(data)
    u = find(sp, HdrType.UNIX, objref=14)
    # the queue declared longer than it is: the next record is not a UNIX_MSG
    bad = copy.deepcopy(sp)
    bad[u].fields["nr_msgs"] = 2
    image, offsets = build(bad)
    with pytest.raises(ImageError, match="where UNIX_MSG record is due"):
        Image.from_bytes(image)
    # a UNIX FILE without its UNIX record
    bad = copy.deepcopy(sp)
    del bad[u : u + 2]
    with pytest.raises(ImageError, match="where UNIX record is due"):
        Image.from_bytes(build(bad)[0])
    # a NUL inside a path name
    bad = copy.deepcopy(sp)
    bad[u].var["name"] = b"/run/a\0b"
    image, offsets = build(bad)
    raises(image, offsets[u], "UNIX record: NUL inside name")
    # the peer is not a unix socket of its type, or not its peer back
    for peer, fragment in ((5, "peer 5 is not a unix socket"), (16, "is not a unix")):
        bad = copy.deepcopy(sp)
        bad[u].fields["peer"] = peer
        image, offsets = build(bad)
        raises(image, offsets[u], fragment)
    bad = copy.deepcopy(sp)
    f16 = find(bad, HdrType.UNIX, objref=16)
    bad[f16].fields.update(state=TCP_ESTABLISHED, type=socket.SOCK_STREAM, peer=15)
    image, offsets = build(bad)
    raises(image, offsets[f16], "peer 15 is not its peer back")


def test_unix_round_trip_keeps_everything(image: Image) -> None:
    back = Image.from_bytes(image.to_bytes())
    for ref in (14, 15, 16):
        assert back.files[ref].extra == image.files[ref].extra
    assert back.files[16].extra.msgs[0] == Msg(b"", b"/run/sender")


# moved from test_show.py
def test_summary_unix_sockets(image: Image) -> None:
    lines = summary(image).splitlines()
    assert (
        "  fd 13 -> objref 14 unix stream /run/accepted.sock -> objref 15, 1 queued "
        "(12 bytes) read+write O_RDWR" in lines
    )
    at = lines.index("unix sockets:")
    assert lines[at + 1] == (
        "  socket 14: unix stream /run/accepted.sock -> objref 15, 1 queued (12 "
        "bytes); sndbuf 0 rcvbuf 0 [passcred, shut wr]"
    )
    assert '    0 bytes from /run/sender ""' in lines


def test_components_keep_what_is_made_together() -> None:
    """Sockets made in one helper (one holder's rights): a pair, a listener
    with its accepted and pending sockets, a datagram receiver with the
    named senders of its queue; unrelated sockets stay apart."""
    S, D = socket.SOCK_STREAM, socket.SOCK_DGRAM
    socks = {
        1: unix.Unix(S, unix.TCP_ESTABLISHED, peer=2),
        2: unix.Unix(S, unix.TCP_ESTABLISHED, peer=1),
        3: unix.Unix(S, unix.TCP_LISTEN, name=b"/l"),
        4: unix.Unix(S, unix.TCP_ESTABLISHED, name=b"/l", peer=5),  # accepted
        5: unix.Unix(S, unix.TCP_ESTABLISHED, peer=4),  # its client
        6: unix.Unix(S, unix.TCP_ESTABLISHED, listener=3),  # pending
        7: unix.Unix(D, name=b"/r", msgs=[unix.Msg(b"x", b"/s")]),
        8: unix.Unix(D, name=b"/s"),
        9: unix.Unix(D),
    }
    sets = unix.components(socks)
    groups: dict[int, set[int]] = {}
    for key, root in sets.items():
        groups.setdefault(root, set()).add(key)
    assert sorted(map(sorted, groups.values())) == [[1, 2], [3, 4, 5, 6], [7, 8], [9]]
