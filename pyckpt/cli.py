"""pyckpt: the command line, a thin layer over pyckpt.checkpoint/restart/Image.

    pyckpt checkpoint PID -o IMAGE [--freezer auto|cgroup|signal] [--allow-external] [--kill]
                      [--max-file-contents BYTES] [--max-image-bytes BYTES]
                      [--device PATH]...
    pyckpt restart IMAGE [--policy clear-early|clear-at-end|free-upfront]
                   [--hold-context] [--trust-image] [--relocate]
                   [--stdio auto|inherit|null|FILE] [--device PATH]...
                   [--max-tasks N] [--max-fds N] [--max-pipe-bytes N]
                   [--max-contents-bytes N] [--max-strings N] [--max-groups N]
                   [-- CMD...]
    pyckpt show IMAGE [--json | --dot]
    pyckpt ls PID [--json | --dot]
    pyckpt demo | bench [cr|creds|resume|criu|epoll|codec]
    pyckpt repro halfpipe|deferqueue|epoll|header [--policy P | --all-policies] [--json]
    pyckpt abi-check [--module KO] [--kver KVER] [--json] [--vermagic-only]
    pyckpt trace [--json] [--no-hist] -- CMD...

Exit status: 0 on success (restart: the restarted root's own status), 1 when
the operation failed (the message says why; nothing was changed), 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from pyckpt.abi import Policy, lib

POLICIES = {
    "clear-early": Policy.CLEAR_EARLY,
    "clear-at-end": Policy.CLEAR_AT_END,
    "free-upfront": Policy.FREE_UPFRONT,
}


# restart's image limits: Limits field, flag, what exceeding it means
LIMIT_FLAGS = (
    ("tasks", "--max-tasks", "an image of more tasks"),
    ("fds", "--max-fds", "an image of more fds in all"),
    ("pipe_bytes", "--max-pipe-bytes", "more buffered pipe data"),
    ("contents_bytes", "--max-contents-bytes", "more memfd/deleted file data"),
    ("strings", "--max-strings", "more argv and env strings over all tasks"),
    ("groups", "--max-groups", "more supplementary groups over all tasks"),
)


def _bytes_arg(text: str) -> int:
    """BYTES, or with a K, M or G suffix (powers of 1024)."""
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    try:
        n = int(text[:-1] if mult > 1 else text) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if not 0 <= n <= lib.CKPT_CONTENTS_DATA_MAX:
        raise argparse.ArgumentTypeError(
            f"{text}: outside 0..{lib.CKPT_CONTENTS_DATA_MAX} (CKPT_CONTENTS_DATA_MAX)"
        )
    return n


def _image_bytes_arg(text: str) -> int:
    """BYTES with an optional K, M or G suffix, any size >= 0."""
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    try:
        n = int(text[:-1] if mult > 1 else text) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text}: a size is >= 0")
    return n


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def _options(args: argparse.Namespace) -> Any:
    from pyckpt.checkpointer import Options

    opts = Options()
    if args.max_file_contents is not None:
        opts.contents_limit = args.max_file_contents
    if args.max_image_bytes is not None:
        opts.max_image_bytes = args.max_image_bytes
    return opts


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from pyckpt.api import checkpoint

    res = checkpoint(
        args.pid,
        output=args.output,
        freezer=args.freezer,
        allow_external=args.allow_external,
        kill=args.kill,
        options=_options(args),
        devices=args.device,
    )
    size = os.path.getsize(args.output)
    print(
        f"checkpointed {res.nr_tasks} tasks, {res.nr_fds} fds, "
        f"{res.nr_files} open files into {args.output} ({_size(size)})"
    )
    print(
        f"downtime {res.downtime * 1e3:.1f} ms (frozen), "
        f"checkpoint {res.collect_time * 1e3:.1f} ms"
    )
    for e in res.image.errors:
        print(f"note: {e.msg}")
    if args.kill:
        print("the tree was killed")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    import warnings

    from pyckpt.api import restart
    from pyckpt.image import Image
    from pyckpt.kinds.chrdev import check_devices
    from pyckpt.kinds.tty import check_stdio
    from pyckpt.limits import Limits

    argv = args.command or None
    check_stdio(args.stdio)  # bad options before reading the image
    check_devices(args.device)
    limits = Limits(**{field: getattr(args, field) for field, _, _ in LIMIT_FLAGS})
    # the limits apply while the image is read, not once it is
    image = Image.load(args.image, trust=args.trust_image, limits=limits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # printed below, once each
        r = restart(
            image,
            policy=POLICIES[args.policy],
            argv=argv,
            relocate=args.relocate,
            limits=limits,
            stdio=args.stdio,
            devices=args.device,
        )
    for w in r.warnings:
        print(f"warning: {w}", file=sys.stderr)
    root_old = image.tasks[0].pid
    for old, new in r.pids.items():
        print(f"task {old} -> {new}", file=sys.stderr)
    if not args.hold_context:
        r.teardown()
    # the coordinator stays as the root's reaper, like user-cr's
    code = r.wait()[root_old]
    return 128 - code if code < 0 else code  # killed by a signal: as a shell says


def cmd_show(args: argparse.Namespace) -> int:
    from pyckpt import show
    from pyckpt.image import Image, open_image

    # show acts on nothing it reads: any owner, but never a link followed
    # nor a FIFO waited on
    with os.fdopen(open_image(args.image, trust=True), "rb") as f:
        data = f.read()
    if args.json:
        Image.from_bytes(data)  # the full decode only of a valid image
        json.dump(show.to_json(data), sys.stdout, indent=1)
        print()
    elif args.dot:
        print(show.to_dot(Image.from_bytes(data)), end="")
    else:
        print(show.summary(Image.from_bytes(data)), end="")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from pyckpt import ls

    snap = ls.snapshot(args.pid)
    if args.json:
        json.dump(ls.to_json(snap), sys.stdout, indent=1)
        print()
    elif args.dot:
        print(ls.to_dot(snap), end="")
    else:
        print(ls.summary(snap), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pyckpt.tools import demo

    return demo.main()


def cmd_bench(args: argparse.Namespace) -> int:
    from pyckpt.tools import bench

    return bench.main(args.what)


def cmd_repro(args: argparse.Namespace) -> int:
    from pyckpt.tools import repro

    if args.all_policies:
        policies = list(repro.POLICY_ORDER)
    elif args.policy:
        policies = [POLICIES[args.policy]]
    else:
        policies = None  # the scenario's own default
    rep = repro.run(args.name, policies)
    print(rep.to_json() if args.json else rep.render(), end="\n" if args.json else "")
    return 0 if rep.ok else 1


def cmd_abi_check(args: argparse.Namespace) -> int:
    from pyckpt.tools import abicheck

    return abicheck.main(
        args.module, args.kver, as_json=args.json, vermagic_only=args.vermagic_only
    )


def cmd_trace(args: argparse.Namespace) -> int:
    from pyckpt.tools import trace

    return trace.main(args.command, as_json=args.json, hist=not args.no_hist)


def parser() -> argparse.ArgumentParser:
    from pyckpt.limits import Limits

    p = argparse.ArgumentParser(
        prog="pyckpt",
        description="Checkpoint and restart the file-object graph of a process "
        "tree through /dev/ckpt (linux-cr's objhash as a module).",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    c = sub.add_parser("checkpoint", help="freeze a process tree and save it")
    c.add_argument("pid", type=int, help="root of the tree")
    c.add_argument("-o", "--output", required=True, help="image file to write")
    c.add_argument(
        "--freezer",
        choices=("auto", "cgroup", "signal"),
        default="auto",
        help="the cgroup v2 freezer, SIGSTOP each task, or (auto, the default) "
        "cgroup where usable, else signal; with either, a task that ran "
        "during collection refuses the checkpoint",
    )
    c.add_argument(
        "--allow-external",
        action="store_true",
        help="record objects also held outside the tree instead of failing",
    )
    c.add_argument(
        "--kill", action="store_true", help="kill the tree after the checkpoint"
    )
    c.add_argument(
        "--max-file-contents",
        type=_bytes_arg,
        metavar="BYTES",
        help="save up to BYTES of each memfd or deleted file (default 1 MiB; "
        f"at most {lib.CKPT_CONTENTS_DATA_MAX}); a larger one is refused",
    )
    c.add_argument(
        "--max-image-bytes",
        type=_image_bytes_arg,
        metavar="BYTES",
        help="read at most BYTES of data from the tree in all (pipe buffers, "
        "socket queues, file contents; default 1G, K/M/G suffixes); a tree "
        "with more is refused, naming the object that crossed it",
    )
    c.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="PATH",
        help="save this character device as stateless, reopened by path at "
        "restart (repeatable; null, zero, full, random, urandom and tty "
        "always are)",
    )
    c.set_defaults(fn=cmd_checkpoint)

    r = sub.add_parser(
        "restart",
        help="recreate the tree's objects and tasks; each runs CMD "
        "(default: its recorded argv)",
    )
    r.add_argument("image")
    r.add_argument(
        "--policy",
        choices=tuple(POLICIES),
        default="clear-early",
        help="when the objhash drops its references (the half-closed pipe race; default "
        "clear-early, the v2 patch)",
    )
    r.add_argument(
        "--hold-context",
        action="store_true",
        help="keep the context open until the root exits (clear-at-end then "
        "holds every object that long)",
    )
    r.add_argument(
        "--trust-image",
        action="store_true",
        help="read an image even if someone other than root or you could "
        "have written it (it decides what runs, and as whom)",
    )
    r.add_argument(
        "--relocate",
        action="store_true",
        help="files reopened by path, and each task's cwd, may have another "
        "device/inode (another machine); their type and owner are still "
        "checked",
    )
    r.add_argument(
        "--stdio",
        default="auto",
        metavar="auto|inherit|null|FILE",
        help="what the tree's terminal (a tty, or a device on fds 0-2) "
        "becomes: this command's own fds 0-2 (inherit), /dev/null, or a "
        "regular file (output appended, input from /dev/null); auto "
        "(default): inherit for your own tasks, /dev/null for another "
        "user's",
    )
    r.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="PATH",
        help="reopen this character device, named with --device at "
        "checkpoint (repeatable)",
    )
    d = Limits()
    for field, flag, what in LIMIT_FLAGS:
        r.add_argument(
            flag,
            dest=field,
            type=int,
            default=getattr(d, field),
            metavar="N",
            help=f"refuse {what} (default {getattr(d, field)})",
        )
    r.add_argument(
        "command",
        nargs="*",
        help="-- CMD ARGS...: what every task execs instead of its own "
        "program (CMD found on this command's PATH, not the task's)",
    )
    r.set_defaults(fn=cmd_restart)

    s = sub.add_parser("show", help="decode an image")
    s.add_argument("image")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="every record, decoded")
    g.add_argument("--dot", action="store_true", help="sharing graph (Graphviz)")
    s.set_defaults(fn=cmd_show)

    ls = sub.add_parser(
        "ls",
        help="a live tree's fds and what they share (open files, pipe and "
        "socket-pair ends, epoll targets); not frozen: a snapshot that may race",
    )
    ls.add_argument("pid", type=int, help="root of the tree")
    g = ls.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="the snapshot as JSON")
    g.add_argument("--dot", action="store_true", help="sharing graph (Graphviz)")
    ls.set_defaults(fn=cmd_ls)

    sub.add_parser("demo", help="the module at work, narrated").set_defaults(
        fn=cmd_demo
    )
    b = sub.add_parser(
        "bench",
        help="the module's figures; 'bench resume [--sizes N,N] [--out DIR]': "
        "how long release keeps restarted tasks waiting, per policy",
    )
    b.add_argument(
        "what",
        nargs=argparse.REMAINDER,
        help="one section: cr | creds | resume [...] | criu [--tasks N --sizes "
        "N,N] | epoll [--sizes N,N] | codec [--rounds N]; none: all",
    )
    b.set_defaults(fn=cmd_bench)

    from pyckpt.tools.repro import SCENARIOS

    rp = sub.add_parser(
        "repro", help="reproduce one seed post's semantics on the module (VM)"
    )
    rp.add_argument(
        "name",
        choices=tuple(SCENARIOS),
        help="; ".join(f"{k}: seed {v[1]}" for k, v in SCENARIOS.items()),
    )
    pg = rp.add_mutually_exclusive_group()
    pg.add_argument("--policy", choices=tuple(POLICIES), help="one policy")
    pg.add_argument(
        "--all-policies", action="store_true", help="each policy, side by side"
    )
    rp.add_argument("--json", action="store_true", help="the figures as JSON")
    rp.set_defaults(fn=cmd_repro)

    ac = sub.add_parser(
        "abi-check",
        help="ckpt.ko's DWARF layouts against cffi's, and its vermagic "
        "against a kernel",
    )
    ac.add_argument(
        "--module", default=None, help="the .ko (default build/kmod-KVER/ckpt.ko)"
    )
    ac.add_argument(
        "--kver",
        default=None,
        help="the kernel that will load it (default: the running one)",
    )
    ac.add_argument("--json", action="store_true", help="the findings as JSON")
    ac.add_argument(
        "--vermagic-only",
        action="store_true",
        help="only whether the kernel can load the module (before insmod)",
    )
    ac.set_defaults(fn=cmd_abi_check)

    tr = sub.add_parser(
        "trace",
        help="bcc kprobes on ckpt.ko's functions while CMD runs: timeline "
        "and latency histograms (VM, root)",
    )
    tr.add_argument("--json", action="store_true", help="every event as JSON")
    tr.add_argument("--no-hist", action="store_true", help="no histograms")
    tr.add_argument("command", nargs="*", help="-- CMD ARGS...")
    tr.set_defaults(fn=cmd_trace)
    return p


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Everything after the first `--` is the command, taken as it is; before
    it, options may stand on either side of the image (as the README writes
    them). argparse alone cannot do both: REMAINDER swallows options after
    the image, and nargs="*" refuses `--` once an option came first."""
    argv = list(sys.argv[1:] if argv is None else argv)
    tail = None
    if "--" in argv:
        i = argv.index("--")
        argv, tail = argv[:i], argv[i + 1 :]
    p = parser()
    args = p.parse_args(argv)
    if tail is not None:
        if not hasattr(args, "command"):
            p.error("-- CMD only follows restart and trace")
        args.command = [*args.command, *tail]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from pyckpt.errors import Error

    args = parse(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130
    except (Error, OSError, ValueError) as e:
        # every pyckpt error says why; OSError/ValueError: files, arguments
        print(f"pyckpt {args.cmd}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - never a traceback for a user
        print(f"pyckpt {args.cmd}: internal error: {e!r}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
