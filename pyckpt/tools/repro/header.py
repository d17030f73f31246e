"""The record header {type, len, ptag}, HEAD and parent tags.

The post's cr_write_hdr() wrote major/minor/patch and left "EXTRAVERSION?"
open; cr_read_obj_type() returned the ptag, "the tag of the parent object".
Here a small tree is checkpointed and its image decoded record by record:
HEAD carries the full uname (sysname, release, version, machine) and the
format and ABI versions; each FD's ptag is its TASK's tag and each FILE's
(or OBJREF's) ptag is the FD that first named it, so every record leads to
its task.  TASK's comm has an explicit length: no TASK_COMM_LEN in the ABI.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from pyckpt.abi import HdrType, Policy, lib
from pyckpt.checkpointer import checkpoint
from pyckpt.image import iter_records
from pyckpt.tools.repro import Report, _tree

DEFAULT_POLICIES = (Policy.CLEAR_EARLY,)


def _shared() -> _tree.Shared:
    r, w = os.pipe()
    return {"r": r, "w": w, "e": os.eventfd(5)}


def _text(b: bytes) -> str:
    return b.decode(errors="replace")


def run(policies: Sequence[Policy] = DEFAULT_POLICIES) -> Report:
    del policies  # the image format does not depend on the policy
    rep = Report(
        "header",
        "004",
        "HEAD decoded, ptag linking FD and FILE records to their TASK",
        ["tag", "record", "ptag", "belongs to", "fields"],
    )
    root = _tree.build(
        _shared,
        [lambda s: {3: s["r"], 4: s["e"]}],
        root=lambda s: {3: s["r"], 5: s["w"]},
    )
    try:
        res = checkpoint(root, kill=True)  # killed while frozen, no file
    finally:
        _tree.kill(root)
    data = res.image.to_bytes()
    recs = list(iter_records(data))
    by_tag = {r.tag: r for r in recs}

    def task_of(tag: int) -> int | None:
        """Follow ptags up to a TASK record: its pid."""
        while tag:
            r = by_tag[tag]
            if r.type == HdrType.TASK:
                return r.fields["pid"]
            tag = r.ptag
        return None

    uts = os.uname()
    head = recs[0]
    hf = head.fields
    rep.data["head"] = {
        k: _text(hf[k]) for k in ("sysname", "release", "version", "machine")
    } | {
        "format_version": hf["format_version"],
        "abi_version": hf["abi_version"],
        "time_sec": hf["time_sec"],
    }
    rep.check(
        head.type == HdrType.HEAD and head.ptag == 0, "HEAD comes first, at top level"
    )
    rep.check(
        (
            _text(hf["sysname"]),
            _text(hf["release"]),
            _text(hf["version"]),
            _text(hf["machine"]),
        )
        == (uts.sysname, uts.release, uts.version, uts.machine),
        "HEAD holds the full uname of the checkpointing kernel (no EXTRAVERSION lost)",
    )
    rep.check(
        (hf["format_version"], hf["abi_version"])
        == (lib.CKPT_FORMAT_VERSION, lib.CKPT_ABI_VERSION),
        "HEAD holds the format and ABI versions",
    )
    links = []
    for r in recs:
        t = task_of(r.ptag) if r.type != HdrType.TASK else r.fields.get("pid")
        if r.type == HdrType.HEAD:
            what = (
                f"{_text(hf['sysname'])} {_text(hf['release'])} "
                f"{_text(hf['machine'])}, format {hf['format_version']}, "
                f"abi {hf['abi_version']}"
            )
        elif r.type == HdrType.TASK:
            what = (
                f"pid {r.fields['pid']} ppid {r.fields['ppid']} comm "
                f"{_text(r.fields['comm'])!r} (comm_len {r.fields['comm_len']})"
            )
        elif r.type == HdrType.FD:
            what = f"fd {r.fields['fd']} -> objref {r.fields['objref']}"
        elif r.type in (HdrType.FILE, HdrType.OBJREF, HdrType.PIPE, HdrType.EPOLL):
            what = f"objref {r.fields.get('objref')}"
        else:
            what = ""
        parent = by_tag[r.ptag].type.name if r.ptag else "-"
        belongs = f"task {t}" if t is not None else "-"
        rep.rows.append(
            [
                str(r.tag),
                r.type.name,
                f"{r.ptag} ({parent})" if r.ptag else "0",
                belongs,
                what,
            ]
        )
        if r.type == HdrType.FD:
            links.append(
                (
                    task_of(r.ptag),
                    r.fields["fd"],
                    r.fields["objref"],
                    by_tag[r.ptag].type,
                )
            )
    # the FD records, resolved through ptags, must give each task its own fds
    want = sorted((t.pid, f.fd, f.objref) for t in res.image.tasks for f in t.fds)
    got = sorted((pid, fd, ref) for pid, fd, ref, _ in links)
    rep.check(
        all(p == HdrType.TASK for *_, p in links), "every FD's ptag is a TASK's tag"
    )
    rep.check(
        got == want and len(want) == 4,
        "ptags give each task exactly its fds (4 FD records, 2 tasks)",
    )
    files = [r for r in recs if r.type in (HdrType.FILE, HdrType.OBJREF)]
    rep.check(
        all(by_tag[r.ptag].type == HdrType.FD for r in files)
        and all(task_of(r.ptag) is not None for r in files),
        "every FILE and OBJREF record's ptag is an FD, which leads to its TASK",
    )
    rep.check(
        any(r.type == HdrType.OBJREF for r in files),
        "a file shared by two tasks is saved once; the second FD gets an OBJREF",
    )
    rep.data["records"] = [
        {
            "tag": r.tag,
            "type": r.type.name,
            "ptag": r.ptag,
            "task": task_of(r.ptag) if r.type != HdrType.TASK else r.fields["pid"],
            "offset": r.offset,
            "len": r.len,
        }
        for r in recs
    ]
    return rep
