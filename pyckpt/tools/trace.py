"""``pyckpt trace``: bcc kprobes on ckpt.ko's own functions.

One BPF program (compiling it costs about a minute under TCG: build one
Tracer and reuse it) attaches a kprobe and a kretprobe to each call of
interest and a kprobe to each hash reference drop, and counts the kfree()s of
hash entries (a kfree() called by ckpt_obj_hash_free() itself, outside
kvfree(): the free list, not the bucket arrays).  It keeps, in the kernel, per
probe the count and the first and last time, and a log2 latency histogram
per function; a ring buffer carries every event for the timeline.

Needs root, Debian's bcc (python3-bpfcc; the venv sees it through its
system site packages), the booted kernel's headers under
/lib/modules/$(uname -r)/build and tracefs: all there in the project's VM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MODULE = "ckpt"
# (name in the module, what it is); order is the func id
CALLS = [
    ("ckpt_obj_lookup_add", "lookup_add (checkpoint: dedupe by pointer)"),
    ("ckpt_obj_insert", "insert (restart: index by objref)"),
    ("ckpt_obj_fetch", "fetch (restart: objref -> object)"),
    ("ckpt_obj_drop", "drop one objref early (deferred DROP)"),
    ("ckpt_obj_hash_clear", "clear: drop every ref, entries to the free list"),
    ("ckpt_obj_hash_free", "free: kfree the free list and buckets"),
    ("ckpt_deferqueue_run", "deferqueue run"),
    ("ioc_release", "the release ioctl (CKPT_IOC_RELEASE)"),
    ("ckpt_release", "context teardown (close of /dev/ckpt)"),
]
DROPS = [
    ("file_drop", "ref drop: FILE"),
    ("inode_drop", "ref drop: INODE"),
    ("test_drop", "ref drop: TEST"),
]
KFREE = "entry kfree"
# return types other than int: 1 void, 2 pointer (shown as 0 or its errno)
RTYPE = {"ckpt_obj_hash_clear": 1, "ckpt_obj_hash_free": 1, "ckpt_obj_fetch": 2}
NAMES = [n for n, _ in CALLS] + [n for n, _ in DROPS] + [KFREE]
FREE_ID = NAMES.index("ckpt_obj_hash_free")
KFREE_ID = NAMES.index(KFREE)
ENTER, LEAVE = 0, 1

_PROG = r"""
#include <uapi/linux/ptrace.h>

struct ev { u64 ts; u32 tgid; u32 tid; u32 func; u32 kind; s64 ret; };
struct agg { u64 count; u64 first; u64 last; };
struct skey { u32 tid; u32 func; };
struct hkey { u32 func; u32 slot; };

BPF_RINGBUF_OUTPUT(events, 256);
BPF_ARRAY(aggs, struct agg, NSLOTS);
BPF_ARRAY(lost, u64, 1);
BPF_HASH(start, struct skey, u64);
BPF_HISTOGRAM(lat, struct hkey, 1024);
BPF_HASH(infree, u32, u32);
BPF_HASH(inkv, u32, u32);

static int emit(u32 func, u32 kind, s64 ret)
{
	u64 ts = bpf_ktime_get_ns(), id = bpf_get_current_pid_tgid();
	int idx = func * 2 + kind;
	struct agg *a = aggs.lookup(&idx);

	if (a) {
		__sync_fetch_and_add(&a->count, 1);
		if (!a->first)
			a->first = ts;
		a->last = ts;
	}
	struct ev *e = events.ringbuf_reserve(sizeof(*e));
	if (!e) {
		int z = 0;
		u64 *l = lost.lookup(&z);
		if (l)
			__sync_fetch_and_add(l, 1);
		return 0;
	}
	e->ts = ts;
	e->tgid = id >> 32;
	e->tid = (u32)id;
	e->func = func;
	e->kind = kind;
	e->ret = ret;
	events.ringbuf_submit(e, 0);
	return 0;
}

static int enter(u32 func)
{
	struct skey k = { (u32)bpf_get_current_pid_tgid(), func };
	u64 ts = bpf_ktime_get_ns();

	start.update(&k, &ts);
	if (func == FREE_ID) {
		u32 one = 1;
		infree.update(&k.tid, &one);
	}
	return emit(func, 0, 0);
}

/* rtype 0: int, 1: void (no value), 2: pointer (0, or its errno: no
 * kernel address leaves the kernel) */
static int leave(struct pt_regs *ctx, u32 func, u32 rtype)
{
	u64 rc = PT_REGS_RC(ctx);
	s64 ret = 0;

	struct skey k = { (u32)bpf_get_current_pid_tgid(), func };
	u64 *t = start.lookup(&k);

	if (t) {
		struct hkey h = { func, bpf_log2l(bpf_ktime_get_ns() - *t) };
		lat.increment(h);
		start.delete(&k);
	}
	if (func == FREE_ID)
		infree.delete(&k.tid);
	if (rtype == 0)
		ret = (int)rc;
	else if (rtype == 2 && rc >= (u64)-4095)
		ret = (s64)rc;
	return emit(func, 1, ret);
}

int on_kvfree(struct pt_regs *ctx)
{
	u32 tid = bpf_get_current_pid_tgid(), one = 1;

	if (infree.lookup(&tid))
		inkv.update(&tid, &one);
	return 0;
}

int on_kvfree_ret(struct pt_regs *ctx)
{
	u32 tid = bpf_get_current_pid_tgid();

	inkv.delete(&tid);
	return 0;
}

/* An entry kfree is a kfree() that ckpt_obj_hash_free() calls itself: its
 * thread is in that function, not in kvfree() (which may tail-call kfree()
 * for the bucket arrays), and its return address lies in that function.
 * The thread alone would also count the kfree()s of an interrupt (an RCU
 * softirq) that arrived on that thread during the free. */
int on_kfree(struct pt_regs *ctx)
{
	u32 tid = bpf_get_current_pid_tgid();
	u64 ra = 0;

	if (!infree.lookup(&tid) || inkv.lookup(&tid))
		return 0;
	bpf_probe_read_kernel(&ra, sizeof(ra), (void *)PT_REGS_SP(ctx));
	if (ra < FREE_LO || ra >= FREE_HI)
		return 0;
	return emit(KFREE_ID, 0, 0);
}
"""


def program(nslots: int, free: tuple[int, int]) -> str:
    """The BPF C text, probe functions included (KFREE_ID before FREE_ID:
    one name contains the other); free is ckpt_obj_hash_free()'s address
    range."""
    text = _PROG.replace("NSLOTS", str(nslots)).replace("KFREE_ID", str(KFREE_ID))
    text = text.replace("FREE_ID", str(FREE_ID))
    text = text.replace("FREE_LO", f"{free[0]:#x}ULL")
    text = text.replace("FREE_HI", f"{free[1]:#x}ULL")
    for i in range(len(NAMES) - 1):
        text += (
            f"int enter_{i}(struct pt_regs *ctx) {{ return enter({i}); }}\n"
            f"int leave_{i}(struct pt_regs *ctx) "
            f"{{ return leave(ctx, {i}, {RTYPE.get(NAMES[i], 0)}); }}\n"
        )
    return text


class TraceUnavailable(Exception):
    """bcc cannot run here; the message says exactly why."""


def why_unavailable() -> str | None:
    """None if a Tracer can be built here, else the reason."""
    if os.geteuid() != 0:
        return "bcc needs root (kprobes and BPF)"
    try:
        import bcc  # noqa: F401
    except ImportError as e:
        return (
            f"cannot import bcc ({e}): install Debian's python3-bpfcc and use a "
            "venv with system site packages (the PyPI 'bcc' is another project)"
        )
    build = f"/lib/modules/{os.uname().release}/build"
    if not os.path.isdir(build):
        return f"no kernel headers at {build} for the running kernel"
    if not (
        os.path.isdir("/sys/kernel/tracing/events")
        or os.path.isdir("/sys/kernel/debug/tracing/events")
    ):
        return "tracefs is not mounted (/sys/kernel/tracing)"
    if not module_symbols():
        return (
            f"module {MODULE} is not loaded (no [{MODULE}] symbols in /proc/kallsyms)"
        )
    return None


def module_symbols() -> set[str]:
    """The module's function names as /proc/kallsyms lists them (what was
    not inlined: those are the ones a kprobe can hit)."""
    out = set()
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4 and parts[3] == f"[{MODULE}]" and parts[1] in "tT":
                out.add(parts[2])
    return out


def symbol_range(name: str) -> tuple[int, int]:
    """[start, end) of the module's function name, from /proc/kallsyms (as
    root): it ends where the next symbol in the kernel's address space
    begins."""
    start, addrs = 0, []
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            addr = int(parts[0], 16)
            if parts[2] == name and parts[3:] == [f"[{MODULE}]"]:
                start = addr
            addrs.append(addr)
    if not start:
        raise TraceUnavailable(f"no address for {name} in /proc/kallsyms")
    end = min((a for a in addrs if a > start), default=start + 4096)
    return start, end


@dataclass
class Agg:
    count: int
    first: int  # ns, CLOCK_MONOTONIC (bpf_ktime_get_ns)
    last: int


@dataclass
class Trace:
    """What the probes saw since the last reset."""

    aggs: dict[tuple[str, int], Agg]  # (name, ENTER|LEAVE) -> counts and times
    events: list[dict[str, Any]]
    hist: dict[str, dict[int, int]]  # name -> {log2 ns slot: count}
    lost: int
    missing: list[str] = field(default_factory=list)

    def agg(self, name: str, kind: int = ENTER) -> Agg | None:
        return self.aggs.get((name, kind))

    def span(self, names: list[str]) -> Agg | None:
        """count, first and last over several probes (entries)."""
        got = [a for n in names if (a := self.agg(n))]
        if not got:
            return None
        return Agg(
            sum(a.count for a in got),
            min(a.first for a in got),
            max(a.last for a in got),
        )

    def releases(self) -> list[int]:
        """The times the release ioctl returned."""
        return [
            e["ts"]
            for e in self.events
            if e["func"] == "ioc_release" and e["kind"] == LEAVE
        ]


class Tracer:
    """One compiled BPF program attached to the module; reuse it."""

    def __init__(self) -> None:
        why = why_unavailable()
        if why:
            raise TraceUnavailable(why)
        from bcc import BPF

        syms = module_symbols()
        present = [n for n in NAMES[:-1] if n in syms]
        self.missing = [n for n in NAMES[:-1] if n not in syms]
        nslots = 2 * len(NAMES)
        text = program(nslots, symbol_range("ckpt_obj_hash_free"))
        t0 = time.monotonic()
        self.bpf = BPF(text=text.encode())
        self.compile_s = time.monotonic() - t0
        drops = {n for n, _ in DROPS}
        for i, n in enumerate(NAMES[:-1]):
            if n not in present:
                continue
            self.bpf.attach_kprobe(event=n.encode(), fn_name=f"enter_{i}".encode())
            if n not in drops:
                self.bpf.attach_kretprobe(
                    event=n.encode(), fn_name=f"leave_{i}".encode()
                )
        self.bpf.attach_kprobe(event=b"kvfree", fn_name=b"on_kvfree")
        self.bpf.attach_kretprobe(event=b"kvfree", fn_name=b"on_kvfree_ret")
        self.bpf.attach_kprobe(event=b"kfree", fn_name=b"on_kfree")
        self._events: list[dict[str, Any]] = []
        self.bpf[b"events"].open_ring_buffer(self._on_event)

    def _on_event(self, _cpu: int, data: Any, _size: int) -> None:
        e = self.bpf[b"events"].event(data)
        self._events.append(
            {
                "ts": e.ts,
                "tgid": e.tgid,
                "tid": e.tid,
                "func": NAMES[e.func],
                "kind": e.kind,
                "ret": e.ret,
            }
        )

    def poll(self, timeout_ms: int = 0) -> None:
        self.bpf.ring_buffer_poll(timeout_ms)

    def reset(self) -> None:
        self.poll()
        self._events.clear()
        for name in ("aggs", "lost", "lat", "start"):
            self.bpf[name.encode()].clear() if name in ("lat", "start") else self._zero(
                name
            )

    def _zero(self, name: str) -> None:
        t = self.bpf[name.encode()]
        for k in t:
            t[k] = type(t[k])()

    def collect(self) -> Trace:
        self.poll()
        aggs = {}
        for k, v in self.bpf[b"aggs"].items():
            if v.count:
                aggs[(NAMES[k.value // 2], k.value % 2)] = Agg(v.count, v.first, v.last)
        hist: dict[str, dict[int, int]] = {}
        for k, v in self.bpf[b"lat"].items():
            hist.setdefault(NAMES[k.func], {})[k.slot] = v.value
        lost = self.bpf[b"lost"][0].value
        return Trace(
            aggs,
            sorted(self._events, key=lambda e: e["ts"]),
            hist,
            lost,
            list(self.missing),
        )

    def close(self) -> None:
        self.bpf.cleanup()


# ---- rendering ---------------------------------------------------------------------


def timeline(tr: Trace, limit: int = 60) -> str:
    """Events in time order, runs of the same probe folded into one line."""
    if not tr.events:
        return "  (no event)\n"
    t0 = tr.events[0]["ts"]
    lines, run = [], []

    def flush() -> None:
        if not run:
            return
        e = run[0]
        what = NAMES_DOC.get(e["func"], e["func"])
        arrow = "->" if e["kind"] == ENTER else "<-"
        void = RTYPE.get(e["func"]) == 1
        ret = f" = {e['ret']}" if e["kind"] == LEAVE and not void else ""
        at = f"+{(e['ts'] - t0) / 1e6:10.3f} ms"
        if len(run) == 1:
            lines.append(
                f"  {at}  pid {e['tgid']:>6}  {arrow} {e['func']}{ret}   {what}"
            )
        else:
            span = (run[-1]["ts"] - e["ts"]) / 1e6
            lines.append(
                f"  {at}  pid {e['tgid']:>6}  {arrow} {e['func']} x{len(run)} "
                f"over {span:.3f} ms   {what}"
            )
        run.clear()

    for e in tr.events:
        if run and (e["func"], e["kind"], e["tgid"]) != (
            run[0]["func"],
            run[0]["kind"],
            run[0]["tgid"],
        ):
            flush()
        run.append(e)
    flush()
    if len(lines) > limit:
        lines = (
            lines[: limit // 2]
            + [f"  ... {len(lines) - limit} lines ..."]
            + lines[-limit // 2 :]
        )
    if tr.lost:
        lines.append(
            f"  ({tr.lost} events lost: the ring buffer was full; counts below are exact)"
        )
    return "\n".join(lines) + "\n"


NAMES_DOC = dict(CALLS + DROPS + [(KFREE, "kfree of a hash entry (free list)")])


def histograms(tr: Trace) -> str:
    out = []
    for name in NAMES:
        h = tr.hist.get(name)
        if not h:
            continue
        total = sum(h.values())
        out.append(f"  {name}: {total} calls, latency (ns, log2 buckets)")
        top = max(h.values())
        for slot in range(min(h), max(h) + 1):
            n = h.get(slot, 0)
            lo, hi = (1 << slot) >> 1 if slot else 0, (1 << slot) - 1
            bar = "*" * max(1 if n else 0, round(40 * n / top))
            out.append(f"    {lo:>10} .. {hi:<10} {n:8}  {bar}")
    return "\n".join(out) + "\n" if out else "  (no completed call)\n"


def counts(tr: Trace) -> str:
    c = Counter({n: a.count for (n, k), a in tr.aggs.items() if k == ENTER})
    return "  " + ", ".join(f"{n} {c[n]}" for n in NAMES if c[n]) + "\n"


def main(command: list[str], *, as_json: bool = False, hist: bool = True) -> int:
    if not command:
        print(
            "pyckpt trace: give a command: pyckpt trace -- CMD ARGS...", file=sys.stderr
        )
        return 2
    try:
        tracer = Tracer()
    except TraceUnavailable as e:
        print(f"pyckpt trace: {e}", file=sys.stderr)
        return 1
    print(
        f"pyckpt trace: BPF program compiled in {tracer.compile_s:.1f} s; "
        f"running {' '.join(command)}",
        file=sys.stderr,
    )
    tracer.reset()
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        tracer.poll(100)
    tr = tracer.collect()
    tracer.close()
    if as_json:
        print(
            json.dumps(
                {
                    "events": tr.events,
                    "lost": tr.lost,
                    "missing": tr.missing,
                    "hist": tr.hist,
                    "exit": proc.returncode,
                }
            )
        )
        return proc.returncode
    print(f"\n== timeline ({len(tr.events)} events)")
    print(timeline(tr), end="")
    print("== counts")
    print(counts(tr), end="")
    if hist:
        print("== latency")
        print(histograms(tr), end="")
    if tr.missing:
        print(f"not probed (inlined or absent in this build): {', '.join(tr.missing)}")
    return proc.returncode
