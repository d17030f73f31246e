"""pyckpt.show: the summary, the JSON decode and the Graphviz graph."""

from __future__ import annotations

import base64
import json
import re

import pytest

from pyckpt.abi import FileKind, FMode, lib
from pyckpt.image import Fd, File, Image, ImageError, Task, iter_records
from pyckpt.kinds.eventfd import Eventfd
from pyckpt.names import o_flags_names
from pyckpt.show import summary, to_dot, to_json
from tests.host.test_image import rich_image


@pytest.fixture(scope="module")
def image() -> Image:
    return rich_image()


def test_o_flags_names() -> None:
    import os

    assert o_flags_names(os.O_WRONLY | os.O_NONBLOCK) == "O_WRONLY|O_NONBLOCK"
    assert o_flags_names(os.O_RDWR | os.O_SYNC) == "O_RDWR|O_SYNC"
    assert o_flags_names(os.O_RDONLY | os.O_DSYNC) == "O_RDONLY|O_DSYNC"
    assert o_flags_names(0o100000) == "O_RDONLY|O_LARGEFILE"
    assert o_flags_names(3) == "accmode 3"


def test_summary(image: Image) -> None:
    text = summary(image)
    lines = text.splitlines()
    assert lines[0] == "image: Linux 6.12.0-test x86_64 (#1 SMP PREEMPT_DYNAMIC)"
    abi = lib.CKPT_ABI_VERSION
    fmt = lib.CKPT_FORMAT_VERSION
    assert f"frozen 2023-11-14T22:13:20.125000Z, format {fmt}, abi {abi}" in lines[1]
    assert "4 tasks, 17 files, 3 pipes, 1 epolls, 2 errors" in lines[2]
    assert 'task 101 ppid 100 sid 100 pgid 101 comm "worker"' in lines
    assert '  argv "/bin/sh" "-c" "" "x\\xfe"' in lines
    assert "  cwd  /home/\\xc3" in lines
    assert (
        "  fd 1 -> objref 4 pipe:[objref 3] write O_WRONLY|O_NONBLOCK cloexec" in lines
    )
    assert "  fd 4 -> objref 5 reg /tmp/a\\xff read+write O_RDWR|O_APPEND" in lines
    assert "  fd 5 -> objref 6 fifo:[objref 7] /run/fifo read+write O_RDWR" in lines
    assert "  fd 6 -> objref 8 eventfd count 42 read+write O_RDWR" in lines
    row = next(line for line in lines if line.strip().startswith("5 reg"))
    assert row.split() == [
        "5",
        "reg",
        "read+write",
        "4096",
        "O_RDWR|O_APPEND",
        "/tmp/a\\xff",
    ]
    assert '  pipe 3: size 65536, 12 bytes buffered "hello\\x00\\xffworld"' in lines
    assert '  pipe 7: size 4096, 0 bytes buffered ""' in lines
    assert '  pipe 11: size 8192, 8 bytes buffered "orphaned" (no writer)' in lines
    assert "    target 8 tfd 6 events EPOLLIN|EPOLLOUT data 0xffffffffffffffff" in lines
    assert "  ENOTSUP (pid 102, fd 12, objref 13): socket not supported" in lines
    assert "  note: a note" in lines
    text.encode("utf-8")  # undecodable bytes escaped: printable anywhere


def test_json(image: Image) -> None:
    data = image.to_bytes()
    out = to_json(data)
    again = json.loads(json.dumps(out))
    assert again == out
    recs = list(iter_records(data))
    assert [
        (r["offset"], r["tag"], r["type"], r["len"], r["ptag"]) for r in out["records"]
    ] == [(r.offset, r.tag, r.type.name, r.len, r.ptag) for r in recs]
    assert out["size"] == len(data)
    assert out["head"]["machine"] == "x86_64"
    assert out["head"]["time"] == 1_700_000_000.125
    fd = next(r for r in out["records"] if r["type"] == "FD")
    assert fd["fields"] == {"fd": 0, "objref": 1, "flags": 0}
    pipe = next(r for r in out["records"] if r["type"] == "PIPE")
    assert base64.b64decode(pipe["fields"]["data_base64"]) == b"hello\x00\xffworld"
    assert pipe["fields"]["data_len"] == 12
    reg = next(
        r for r in out["records"] if r["type"] == "FILE" and r["fields"]["objref"] == 5
    )
    assert base64.b64decode(reg["fields"]["path_base64"]) == b"/tmp/a\xff"
    null = next(
        r for r in out["records"] if r["type"] == "FILE" and r["fields"]["objref"] == 1
    )
    assert null["fields"]["path"] == "/dev/null" and "path_base64" not in null["fields"]
    task = next(r for r in out["records"] if r["type"] == "TASK")
    assert [base64.b64decode(a) for a in task["fields"]["argv_base64"]][-1] == b"x\xfe"
    ep = next(r for r in out["records"] if r["type"] == "EPOLL")
    assert ep["fields"]["items"][1] == {
        "target": 8,
        "tfd": 6,
        "events": 5,
        "data": 2**64 - 1,
    }
    tail = out["records"][-1]
    assert tail["fields"]["nr_records"] == len(recs)


def test_json_invalid() -> None:
    data = bytearray(rich_image().to_bytes())
    data[-1] ^= 1  # the top byte of TAIL's checksum
    with pytest.raises(ImageError, match="checksum"):
        to_json(bytes(data))
    out = to_json(bytes(data), strict=False)
    assert out["head"] is None
    assert out["error"]["offset"] == len(data) - 32
    assert "checksum" in out["error"]["message"]
    assert len(out["records"]) == len(list(iter_records(bytes(data))))
    json.dumps(out)
    # a record that does not decode: the records before it
    out = to_json(bytes(data[:400]), strict=False)
    assert [r["type"] for r in out["records"]] == ["HEAD", "TREE"]
    assert out["error"]["offset"] == 336 and "truncated" in out["error"]["message"]


def _edges(dot: str) -> list[tuple[str, str, str]]:
    return re.findall(r"^  (\w+) -> (\w+) \[(.*)\];$", dot, re.MULTILINE)


def test_dot(image: Image) -> None:
    dot = to_dot(image)
    assert dot.startswith("digraph pyckpt {\n") and dot.endswith("}\n")
    assert dot == to_dot(rich_image())  # stable
    edges = _edges(dot)
    # every fd is an edge task -> its open file description's node
    for t in image.tasks:
        for fd in t.fds:
            assert (
                f"task_{t.pid}",
                f"file_{fd.objref}",
                f'label="fd {fd.fd}"',
            ) in edges
    fd_edges = [
        e for e in edges if e[0].startswith("task_") and e[1].startswith("file_")
    ]
    assert len(fd_edges) == sum(len(t.fds) for t in image.tasks)
    # tasks 100 and 101 share objref 2 (a read end): one node, two edges in
    assert dot.count("  file_2 [") == 1
    assert {e[0] for e in fd_edges if e[1] == "file_2"} == {"task_100", "task_101"}
    # tree, pipe ends, epoll items
    assert ("task_100", "task_101", "style=bold") in edges
    assert ("task_101", "task_102", "style=bold") in edges
    assert not any(e[0] == "task_1" for e in edges)  # the root's parent is outside
    assert ("file_2", "pipe_3", 'label="read end"') in edges
    assert ("file_4", "pipe_3", 'label="write end"') in edges
    assert ("file_9", "file_2", 'style=dashed, label="tfd 3 EPOLLIN"') in edges
    # non-UTF-8 path escaped for DOT: \\xff shows as \xff
    assert 'label="file 5 reg\\nread+write\\n/tmp/a\\\\xff"' in dot


def test_dot_escapes_quotes() -> None:
    img = Image(head=rich_image().head)
    img.tasks = [Task(1, 0, 1, 1, 'a"b\\c', [], "/", [Fd(0, 1)])]
    img.files = {1: File(1, FileKind.REG, 0, FMode.READ, path='/x"y\nz')}
    dot = to_dot(img)
    assert 'label="task 1\\na\\"b\\\\\\\\c"' in dot
    assert '/x\\"y\\\\x0az"' in dot
    # every quoted string in the output is balanced: no stray quote
    for line in dot.splitlines():
        assert len(re.sub(r"\\.", "", line).split('"')) % 2 == 1, line


def test_summary_credentials() -> None:
    """show prints a task's identity (an eventfd's line is
    test_kind_eventfd.py's)."""
    from pyckpt.abi import FileKind, FMode
    from pyckpt.image import Fd, File, Head, Image, Task

    rw = FMode.READ | FMode.WRITE
    img = Image(
        head=Head(1.0, "Linux", "6.1.0-x", "#1", "x86_64"),
        tasks=[
            Task(
                5,
                1,
                5,
                5,
                "sh",
                ["-sh"],
                "/",
                [Fd(0, 1), Fd(1, 2)],
                ruid=65534,
                euid=65534,
                suid=65534,
                fsuid=65534,
                rgid=7,
                egid=7,
                sgid=7,
                fsgid=7,
                groups=[8, 9],
                umask=0o027,
                env=["A=1"],
                exe="/bin/sh",
            )
        ],
        files={
            1: File(1, FileKind.EVENTFD, 2, rw, extra=Eventfd(3, sem_unknown=True)),
            2: File(2, FileKind.EVENTFD, 2, rw, extra=Eventfd(4, efd_flags=0)),
        },
    )
    text = summary(Image.from_bytes(img.to_bytes()))
    assert "uid 65534/65534/65534/65534 gid 7/7/7/7 groups 8,9 umask 0027" in text
    assert "  exe  /bin/sh" in text and "env  1 variables" in text


def test_summary_says_task_shapes() -> None:
    from tests.host.test_image import shapes_image

    text = summary(shapes_image())
    assert "  4 threads (restart makes one)" in text
    assert "  shares the fd table of task 100 (CLONE_FILES)" in text
    assert "  zombie (exit status 3, not reaped)" in text
    img = shapes_image()
    img.tasks[-1].exit_status = 9 | 0x80
    assert "zombie (killed by SIGKILL (core dumped), not reaped)" in summary(img)
