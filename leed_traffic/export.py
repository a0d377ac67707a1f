"""Export a trained run as what a traffic engineer deploys: fixed-time plans, a timing table, models.

``export_run(run_dir)`` replays the run's policy (in its deployed mode, ``RunDir.deployed_mode``: sampled with the
episode seed or argmax, whichever its validation on training seeds chose; the run's environment
options, the scenario's first held-out seed) through the shared evaluation path
(``evaluate.run_episode``), records every agent's phase changes, and writes into ``RUN/export/``::

    plans.add.xml      SUMO additional file: per intersection one static <tlLogic> per
                       time-of-day period (programID ``leed_pNN``), switched by a <WAUT>
    timings.csv        the same plans as a table (intersection, streets, period, cycle, phase
                       order, green splits, yellow and all-red)
    models/            per intersection the actor as ONNX (when the ``onnx`` package is
                       installed) or else TorchScript; ``obs_spec.json`` documents the input
    obs_spec.json      per agent: observation layout (lane ids), action -> signal state
    comparison.csv     the plan replayed as a fixed program next to the live policy and the
                       classical controllers (same seeds, same code: ``evaluate.run_episode``)
    export.json        what was exported, from what, and how the plans were derived

How a period's fixed-time plan is derived from what the policy did in it (period ``[t0, t1)``):

- green time ``G_i`` of every green phase i inside the period (yellow/all-red excluded);
- served phases: ``G_i >= 1 s``; phase order: start with the longest-green phase, then follow the
  policy's most frequent transition to a phase not yet placed (ties: more green first);
- cycles ``n = round(phase changes in the period / served phases)`` (at least 1), reduced until
  every served phase fits ``min_green``; cycle length ``C = period / n``;
- green split of phase i: ``(C - k * (yellow + all-red)) * G_i / sum(G)``, rounded to whole
  seconds (at least ``min_green``); the cycle actually written is the sum of its phases;
- a period where the policy held one phase throughout becomes a one-phase program (that is what
  the policy did; nothing is invented).

The plans are written with SUMO's immediate WAUT switch at each period boundary (no
transition-smoothing procedure): SUMO jumps to the new program's first phase, without a yellow,
which is acceptable for simulation but must be smoothed by the field controller.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from leed_traffic.errors import UserError
from leed_traffic.observations import PHASE_FEATURES
from leed_traffic.rundir import RunDir
from leed_traffic.signal import red_state, yellow_state

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1
PROGRAM_PREFIX = "leed_p"


# ---------------------------------------------------------------------------------- recording
@dataclass
class Switch:
    time: float
    """When the yellow starts (the policy's decision time)."""
    src: int
    dst: int


@dataclass
class AgentRecord:
    agent: str
    greens: list[str]
    switches: list[Switch] = field(default_factory=list)
    obs: list[np.ndarray] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)


class RecordingController:
    """Wraps a decision controller and records every agent's phase changes (and a few observations).

    Changes are read from the env's signals (``last_change`` / ``green_phase``), i.e. what was
    actually applied after min-green holds, not the raw actions.
    """

    decides = True

    def __init__(self, inner, keep_obs: int = 64) -> None:
        self.inner = inner
        self.name = inner.name
        self.keep_obs = keep_obs
        self.records: dict[str, AgentRecord] = {}
        self.env = None
        self._seen: dict[str, tuple[float, int]] = {}

    def prepare(self, scenario, workdir: Path, seed: int) -> dict:
        return self.inner.prepare(scenario, workdir, seed)

    def _poll(self, env) -> None:
        for a, ts in env.signals.items():
            rec = self.records.get(a)
            if rec is None:
                rec = self.records[a] = AgentRecord(a, list(ts.topo.greens))
                self._seen[a] = (ts.last_change, ts.green_phase)
            last, phase = self._seen[a]
            if ts.last_change != last and ts.green_phase != phase:
                rec.switches.append(Switch(float(ts.last_change), phase, ts.green_phase))
            self._seen[a] = (ts.last_change, ts.green_phase)

    def act(self, env, obs) -> dict[str, int]:
        self.env = env
        self._poll(env)
        actions = self.inner.act(env, obs)
        for a, rec in self.records.items():
            if len(rec.obs) < self.keep_obs and a in obs:
                rec.obs.append(np.asarray(obs[a], np.float32).copy())
                rec.actions.append(int(actions[a]))
        return actions

    def finish(self) -> None:
        """Pick up the changes applied by the last step (the env object outlives its simulation)."""
        if self.env is not None:
            self._poll(self.env)


# ---------------------------------------------------------------------------------- plans
@dataclass
class PeriodPlan:
    agent: str
    period: int
    start: float
    end: float
    order: list[int]
    greens_s: list[int]
    """Green seconds per phase in ``order``."""
    yellow_s: int
    all_red_s: int
    cycles: int
    switches: int
    green_share: list[float]
    """Share of the period's green time the policy gave each phase in ``order``."""

    @property
    def cycle_s(self) -> int:
        if len(self.order) == 1:
            return self.greens_s[0]
        return sum(self.greens_s) + len(self.order) * (self.yellow_s + self.all_red_s)

    @property
    def program_id(self) -> str:
        return f"{PROGRAM_PREFIX}{self.period:02d}"


def green_intervals(rec: AgentRecord, begin: float, end: float, clearance: float) -> list[tuple[int, float, float]]:
    """(phase, green start, green end) from the switches; phase 0 is green at ``begin`` (env.install)."""
    out = []
    phase, start = 0, begin
    for s in rec.switches:
        if s.time > start:
            out.append((phase, start, s.time))
        phase, start = s.dst, s.time + clearance
    if end > start:
        out.append((phase, start, end))
    return out


def period_plan(rec: AgentRecord, period: int, t0: float, t1: float, *, yellow: int, all_red: int,
                min_green: int, begin: float, end: float) -> PeriodPlan:
    clearance = yellow + all_red
    n_ph = len(rec.greens)
    green = np.zeros(n_ph)
    for ph, a, b in green_intervals(rec, begin, end, clearance):
        green[ph] += max(0.0, min(b, t1) - max(a, t0))
    switches = [s for s in rec.switches if t0 <= s.time < t1]
    served = [i for i in range(n_ph) if green[i] >= 1.0]
    if not served:  # the whole period was yellow (cannot happen with delta > yellow), keep phase 0
        served = [int(np.argmax(green))]
    # order: longest green first, then the most frequent transition to a phase not yet placed
    trans = Counter((s.src, s.dst) for s in switches)
    order = [max(served, key=lambda i: (green[i], -i))]
    while len(order) < len(served):
        cur = order[-1]
        rest = [i for i in served if i not in order]
        order.append(max(rest, key=lambda i: (trans.get((cur, i), 0), green[i], -i)))
    length = t1 - t0
    total = float(green[served].sum())
    share = [float(green[i] / total) if total else 1.0 / len(order) for i in order]
    k = len(order)
    if k == 1:
        return PeriodPlan(rec.agent, period, t0, t1, order, [int(round(length))], yellow, all_red, 1,
                          len(switches), share)
    cycles = max(1, int(round(len(switches) / k)))
    while cycles > 1 and length / cycles - k * clearance < k * max(min_green, 1):
        cycles -= 1
    avail = length / cycles - k * clearance
    greens = _round_split(avail, share, max(min_green, 1))
    return PeriodPlan(rec.agent, period, t0, t1, order, greens, yellow, all_red, cycles, len(switches), share)


def _round_split(total: float, share: Sequence[float], floor: int) -> list[int]:
    """Whole seconds proportional to ``share`` summing to ``round(total)`` (largest remainder), each >= floor."""
    target = max(int(round(total)), floor * len(share))
    raw = [max(float(floor), total * s) for s in share]
    scale = target / sum(raw)
    raw = [r * scale for r in raw]
    out = [max(floor, int(math.floor(r))) for r in raw]
    rem = sorted(range(len(raw)), key=lambda i: raw[i] - math.floor(raw[i]), reverse=True)
    i = 0
    while sum(out) < target and rem:
        out[rem[i % len(rem)]] += 1
        i += 1
    return out


def program_phases(plan: PeriodPlan, greens: list[str]) -> list[tuple[int, str, str]]:
    """(duration, state, name) of one cycle: green, yellow, all-red per phase in order."""
    if len(plan.order) == 1:
        i = plan.order[0]
        return [(plan.greens_s[0], greens[i], f"green {i}")]
    out = []
    for pos, (i, g) in enumerate(zip(plan.order, plan.greens_s)):
        j = plan.order[(pos + 1) % len(plan.order)]
        out.append((g, greens[i], f"green {i}"))
        out.append((plan.yellow_s, yellow_state(greens[i], greens[j]), f"yellow {i}>{j}"))
        if plan.all_red_s > 0:
            out.append((plan.all_red_s, red_state(greens[i], greens[j]), f"all-red {i}>{j}"))
    return out


def plans_xml(plans: dict[str, list[PeriodPlan]], greens: dict[str, list[str]], source: str) -> str:
    """The SUMO additional file: every period's program, then one WAUT per multi-period agent."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f"<!-- leed-traffic export of {escape(source)}: fixed-time plans per period, switched by WAUT -->",
             "<additional>"]
    for a, pps in plans.items():
        # the first period's program is written last: SUMO activates the last program loaded
        for p in sorted(pps, key=lambda p: -p.period):
            lines.append(f"    <tlLogic id={quoteattr(a)} type=\"static\" programID=\"{p.program_id}\" offset=\"0\">")
            for dur, state, name in program_phases(p, greens[a]):
                lines.append(f"        <phase duration=\"{dur}\" state=\"{state}\" name=\"{name}\"/>")
            lines.append("    </tlLogic>")
    for a, pps in plans.items():
        if len(pps) < 2:
            continue
        pps = sorted(pps, key=lambda p: p.period)
        wid = quoteattr(f"leed_{a}")
        lines.append(f"    <WAUT id={wid} refTime=\"0\" startProg=\"{pps[0].program_id}\">")
        for p in pps[1:]:
            lines.append(f"        <wautSwitch time=\"{p.start:g}\" to=\"{p.program_id}\"/>")
        lines.append("    </WAUT>")
        lines.append(f"    <wautJunction wautID={wid} junctionID={quoteattr(a)}/>")
    lines.append("</additional>")
    return "\n".join(lines) + "\n"


def _clock(t: float) -> str:
    t = int(round(t))
    return f"{t // 3600:02d}:{t % 3600 // 60:02d}:{t % 60:02d}"


TIMING_COLUMNS = ("intersection_id", "street_names", "period", "period_start", "period_end", "program_id",
                  "cycle_s", "cycles_in_period", "phase_order", "green_splits_s", "green_split_pct",
                  "yellow_s", "all_red_s", "phase_states", "phase_movements", "policy_phase_changes")


def timing_rows(plans: dict[str, list[PeriodPlan]], topologies: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for a, pps in plans.items():
        topo = topologies[a]
        for p in pps:
            rows.append({
                "intersection_id": a, "street_names": topo.name, "period": p.period,
                "period_start": _clock(p.start), "period_end": _clock(p.end), "program_id": p.program_id,
                "cycle_s": p.cycle_s, "cycles_in_period": p.cycles,
                "phase_order": " > ".join(str(i) for i in p.order),
                "green_splits_s": " / ".join(str(g) for g in p.greens_s),
                "green_split_pct": " / ".join(f"{100 * g / max(sum(p.greens_s), 1):.0f}" for g in p.greens_s),
                "yellow_s": p.yellow_s if len(p.order) > 1 else 0,
                "all_red_s": p.all_red_s if len(p.order) > 1 else 0,
                "phase_states": " / ".join(topo.greens[i] for i in p.order),
                "phase_movements": " | ".join(f"{i}: {_movements(topo, i)}" for i in p.order),
                "policy_phase_changes": p.switches,
            })
    return rows


def _movements(topo, i: int) -> str:
    if not topo.movements or i >= len(topo.movements):
        return topo.greens[i]
    by_from: dict[str, list[str]] = {}
    for m in topo.movements[i]:
        key = f"{m.from_street or '?'} from {m.from_direction}" if m.from_direction else (m.from_street or "?")
        t = m.turn + ("" if m.protected else " (permissive)")
        if t not in by_from.setdefault(key, []):
            by_from[key].append(t)
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in by_from.items())


# ---------------------------------------------------------------------------------- models
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _policy_argmax(pol, agent: str, obs: np.ndarray) -> np.ndarray:
    """The live policy's most likely phase for ``agent`` on ``obs`` (other agents fed zeros)."""
    batch = {a: np.zeros((len(obs), d), dtype=np.float32) for a, d in zip(pol.agents, pol.obs_dims)}
    batch[agent] = obs.astype(np.float32)
    actions, _, _ = pol.act_batch(batch, deterministic=True)
    return np.asarray(actions[agent])


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def export_model(actor, obs_dim: int, path_stem: Path, fmt: str) -> Path:
    import torch

    example = torch.zeros(1, obs_dim)
    if fmt == "onnx":
        import warnings

        path = path_stem.with_suffix(".onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(actor, (example,), str(path), dynamo=False, input_names=["obs"],
                              output_names=["logits", "action"],
                              dynamic_axes={"obs": {0: "batch"}, "logits": {0: "batch"}, "action": {0: "batch"}})
        return path
    import warnings

    path = path_stem.with_suffix(".pt")
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export, still loadable
        warnings.simplefilter("ignore")
        torch.jit.trace(actor, example).save(str(path))
    return path


def run_model(path: Path, obs: np.ndarray) -> np.ndarray:
    """Actions of an exported model (ONNX through onnxruntime, TorchScript through torch)."""
    obs = np.asarray(obs, np.float32).reshape(len(obs), -1)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(sess.run(["action"], {"obs": obs})[0])
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.jit.load(str(path))
    with torch.no_grad():
        return model(torch.as_tensor(obs))[1].numpy()


PHASE_FEATURE_MEANING = (
    "1 if this is the current green phase",
    "1 if at least min_green + yellow s passed since the last change (same in every row)",
    "seconds since the last change / max_green, capped at 2 (same in every row)",
    "sum over the phase's links of (vehicles on the in-lane - vehicles on the out-lane) / 10",
    "halting vehicles (< 0.1 m/s) on the phase's incoming lanes / 10",
    "vehicles on the phase's incoming lanes / 10",
    "halting vehicles on the phase's outgoing lanes / 10 (spillback)",
    "vehicles waiting to enter the network behind the phase's incoming edges / 10 (SUMO's insertion backlog)",
    "number of the phase's incoming lanes / 4",
    "largest halting / capacity ratio among the phase's incoming lanes (capacity = length / (2.5 m + mean vehicle length))",
)
"""The ``phase`` observation's row, in order (``observations.PhaseObservation``); counts capped at 10."""


def _phase_layout(ts) -> list[dict[str, Any]]:
    """Row p of the ``phase`` observation = green phase p; the lanes each row reads."""
    topo, F = ts.topo, PHASE_FEATURES
    rows = []
    for p in range(len(topo.greens)):
        links = topo.phase_links(p)
        rows.append({"slice": [p * F, (p + 1) * F], "name": f"phase_{p}",
                     "in_lanes": sorted({li for li, _ in links}), "out_lanes": sorted({lo for _, lo in links}),
                     "features": list(PHASE_FEATURE_MEANING)})
    return rows


def observation_spec(env, run: RunDir, models: dict[str, str]) -> dict[str, Any]:
    """Per agent: observation layout with lane ids, actions -> signal states, timing rules."""
    cfg = env.config
    agents = {}
    for a, ts in env.signals.items():
        topo = ts.topo
        g, n = ts.num_green_phases, len(topo.in_lanes)
        layout = [
            {"slice": [0, g], "name": "phase_one_hot", "meaning": "1 at the current green phase (action index)"},
            {"slice": [g, g + 1], "name": "min_green_flag",
             "meaning": f"1 if at least min_green + yellow = {cfg.min_green + cfg.yellow_time} s passed since the last change"},
            {"slice": [g + 1, g + 1 + n], "name": "lane_density", "lanes": list(topo.in_lanes),
             "meaning": "vehicles on the lane / (lane length / (2.5 m + mean vehicle length)), capped at 1"},
            {"slice": [g + 1 + n, g + 1 + 2 * n], "name": "lane_queue", "lanes": list(topo.in_lanes),
             "meaning": "halting vehicles (< 0.1 m/s) on the lane / the same capacity, capped at 1"},
        ]
        dim = g + 1 + 2 * n
        if cfg.observation == "pressure":
            layout.append({"slice": [dim, dim + g], "name": "phase_pressure",
                           "meaning": "per green phase: sum over its links of (vehicles in - vehicles out) / 20"})
            dim += g
        elif cfg.observation == "phase":
            layout, dim = _phase_layout(ts), g * PHASE_FEATURES
        elif cfg.observation != "default":
            layout = [{"name": str(cfg.observation), "meaning": "custom observation function (not documented)"}]
        agents[a] = {
            "name": topo.name, "model": models.get(a), "obs_dim": int(env.observation_space(a).shape[0]),
            "layout": layout, "layout_dim": dim,
            "actions": [{"action": i, "state": s, "movements": _movements(topo, i)} for i, s in enumerate(topo.greens)],
            "signal_index_links": [list(link) for link in topo.links],
        }
    return {
        "format": EXPORT_FORMAT, "city": run.city, "algo": run.algo, "scenario_hash": run.scenario_hash,
        "observation": str(cfg.observation),
        "decision_interval_s": cfg.delta_time, "yellow_s": cfg.yellow_time, "all_red_s": cfg.all_red_time,
        "min_green_s": cfg.min_green, "max_green_s": cfg.max_green, "enforce_max_green": cfg.enforce_max_green,
        "rules": ("Every decision_interval_s the controller feeds the observation (float32 [1, obs_dim]) to the "
                  "model and gets an action = index of the next green phase. A different phase is only started "
                  "when min_green_flag is 1 (otherwise hold); a change shows yellow_state(old, new) for yellow_s "
                  "(G/g -> y where the new phase has r) then all-red for all_red_s, then the new green."),
        "model_io": {"input": "obs: float32 [batch, obs_dim]",
                     "outputs": ["logits: float32 [batch, n_actions]", "action: int64 [batch] (argmax)"]},
        "agents": agents,
    }


# ---------------------------------------------------------------------------------- the plan as a controller
@dataclass
class PlanController:
    """An exported ``plans.add.xml`` run by SUMO as fixed programs (evaluated like any program controller)."""

    plans: Path
    name: str = "plan"
    scenario_hash: str = ""
    decides: bool = False

    @classmethod
    def from_path(cls, path: str | Path, name: str | None = None) -> "PlanController":
        """``path``: an export directory (with ``plans.add.xml``) or the additional file itself."""
        p = Path(path)
        if p.is_dir():
            p = p / "plans.add.xml"
        if not p.is_file():
            raise UserError(f"Signal plan {p} does not exist; run `leed-traffic export --run RUN` first.")
        meta_file = p.parent / "export.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        return cls(p.resolve(), name or f"{meta.get('algo', 'policy')}-plan", meta.get("scenario_hash", ""))

    def prepare(self, scenario, workdir: Path, seed: int) -> dict:
        if self.scenario_hash and scenario.hash != self.scenario_hash:
            raise UserError(f"The plan {self.plans} was exported for scenario {self.scenario_hash}, "
                            f"not {scenario.city} ({scenario.hash}); use it on the city it was exported for.")
        return {"control": False, "additional_files": (str(self.plans),)}

    def act(self, env, obs):  # pragma: no cover - never called (decides=False)
        return {}


# ---------------------------------------------------------------------------------- export
def export_run(run_dir: str | Path, out: str | Path | None = None, period_s: int = 900, force: bool = False,
               *, episodes: int = 1, controllers: Sequence[str] | None = None, evaluate_plan: bool = True,
               progress: bool = False) -> Path:
    """Export ``run_dir``'s policy as fixed-time plans, a timing table and models; returns the export dir.

    ``episodes`` held-out seeds are evaluated for ``comparison.csv`` (the plan is derived from the
    first one); classical controllers default to ``evaluate.ALL_CLASSICAL``; rows the run's own
    ``evaluation/metrics.csv`` already holds for the same seed are reused (same code, same seed).
    """
    from leed_traffic.controllers import get_controller
    from leed_traffic.evaluate import held_out_seeds

    if period_s <= 0:
        raise UserError(f"period_s must be positive (got {period_s}).")
    run = RunDir.open(run_dir)
    final = Path(out) if out is not None else run.export_dir
    if final.exists() and not force:
        raise UserError(f"{final} already exists; pass --force to overwrite it or --out another directory.")
    scenario = run.scenario()
    policy = get_controller("policy", run=run.path)  # the deployed mode
    seeds = held_out_seeds(scenario, max(1, episodes))
    t_start = time.time()
    work = Path(tempfile.mkdtemp(prefix="leed-export-"))
    try:
        with run.build_dir(final, replace=force) as tmp:
            _write_export(tmp, work, run, scenario, policy, seeds, period_s=period_s, controllers=controllers,
                          evaluate_plan=evaluate_plan, t_start=t_start)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _write_export(tmp: Path, work: Path, run: RunDir, scenario, policy, seeds: list[int], *, period_s: int,
                  controllers: Sequence[str] | None, evaluate_plan: bool, t_start: float) -> None:
    """Everything ``export_run`` writes, into the temporary directory it then renames into place."""
    import pandas as pd

    from leed_traffic.controllers import get_controller
    from leed_traffic.env import EnvConfig, LeedTrafficEnv
    from leed_traffic.evaluate import ALL_CLASSICAL, run_episode, summarize

    # 1. replay the live policy on the first held-out seed, recording its phase changes
    rec = RecordingController(policy)
    rows = [run_episode(scenario, rec, seeds[0], seconds=run.seconds, workdir=work / "policy")]
    rec.finish()
    env = LeedTrafficEnv(scenario, EnvConfig(seconds=run.seconds, **run.env_options))
    cfg = env.config
    begin, end = env.begin, env.end
    missing = [a for a in env.signals if a not in rec.records]
    if missing:
        raise UserError(f"The replay recorded no decision for {len(missing)} agent(s) ({missing[0]}, ...); "
                        "the episode is shorter than one decision interval.")
    # 2. per period fixed-time plans
    bounds = [(begin + p * period_s, min(begin + (p + 1) * period_s, end))
              for p in range(int(math.ceil((end - begin) / period_s)))]
    plans = {a: [period_plan(rec.records[a], p, t0, t1, yellow=cfg.yellow_time, all_red=cfg.all_red_time,
                             min_green=cfg.min_green, begin=begin, end=end)
                 for p, (t0, t1) in enumerate(bounds)] for a in env.signals}
    greens = {a: list(ts.topo.greens) for a, ts in env.signals.items()}
    (tmp / "plans.add.xml").write_text(plans_xml(plans, greens, str(run.dir)))
    trows = timing_rows(plans, env.topologies)
    with open(tmp / "timings.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=TIMING_COLUMNS)
        w.writeheader()
        w.writerows(trows)
    # 3. models + observation spec
    fmt = "onnx" if onnx_available() else "torchscript"
    (tmp / "models").mkdir()
    models, checked, agree = {}, 0, 0
    for a in env.signals:
        actor = policy.policy.actor_module(a, with_action=True)
        path = export_model(actor, env.observation_space(a).shape[0], tmp / "models" / _safe(a), fmt)
        models[a] = f"models/{path.name}"
        r = rec.records[a]
        if r.obs:
            try:
                got = run_model(path, np.stack(r.obs))
            except ImportError:  # onnx without onnxruntime: exported, not checked
                continue
            want = _policy_argmax(policy.policy, a, np.stack(r.obs))
            checked += len(r.obs)
            agree += int(np.sum(got == want))
    if checked and agree != checked:
        raise RuntimeError(f"exported models disagree with the policy on {checked - agree} of {checked} decisions")
    spec = observation_spec(env, run, models)
    (tmp / "obs_spec.json").write_text(json.dumps(spec, indent=1))
    # 4. the plan next to the live policy and the classical controllers
    plan_ctrl = PlanController(tmp / "plans.add.xml", f"{run.algo}-plan", run.scenario_hash)
    reuse = _previous_rows(run, seeds)
    names = list(ALL_CLASSICAL if controllers is None else controllers)
    if evaluate_plan:
        from leed_traffic.controllers import get_controller

        for s in seeds[1:]:
            rows.append(reuse.get((run.algo, s)) or run_episode(scenario, policy, s, seconds=run.seconds,
                                                                workdir=work / "policy"))
        for s in seeds:
            rows.append(run_episode(scenario, plan_ctrl, s, seconds=run.seconds, workdir=work / "plan"))
        for n in names:
            c = get_controller(n)
            for s in seeds:
                row = reuse.get((c.name, s))
                rows.append(dict(row) if row else run_episode(scenario, c, s, seconds=run.seconds,
                                                              workdir=work / c.name))
    df = pd.DataFrame(rows)
    df.to_csv(tmp / "episodes.csv", index=False)
    summ = summarize(df)
    summ.to_csv(tmp / "comparison.csv", index=False)
    meta = {
        "format": EXPORT_FORMAT, "run": str(run.dir.resolve()), "city": run.city, "algo": run.algo,
        "scenario_hash": run.scenario_hash, "net_file": str(scenario.net_file),
        "route_file": str(scenario.route_file(seeds[0])), "replay_seed": seeds[0], "eval_seeds": seeds,
        "begin": begin, "end": end, "period_s": period_s, "periods": len(bounds),
        "agents": len(plans), "model_format": fmt, "models_checked_decisions": checked,
        "decision_interval_s": cfg.delta_time, "yellow_s": cfg.yellow_time, "all_red_s": cfg.all_red_time,
        "min_green_s": cfg.min_green, "wall_s": round(time.time() - t_start, 1),
        "sumo_command": f"sumo -n {scenario.net_file} -r {scenario.route_file(seeds[0])} -a plans.add.xml "
                        f"-b {begin} -e {end}",
    }
    (tmp / "export.json").write_text(json.dumps(meta, indent=1))


def _previous_rows(run: RunDir, seeds: Sequence[int]) -> dict[tuple[str, int], dict]:
    """Rows of the run's own held-out evaluation (``RUN/evaluation/metrics.csv``) for these seeds."""
    df = run.read_table(run.evaluation_path)  # an unreadable old file only costs a re-run
    if df is None:
        return {}
    return {(r["controller"], int(r["seed"])): r for r in df.to_dict("records") if int(r["seed"]) in seeds}


def read_timings(export_dir: str | Path) -> list[dict[str, str]]:
    with open(Path(export_dir) / "timings.csv", newline="") as f:
        return list(csv.DictReader(f))


__all__ = ["PlanController", "export_run", "read_timings"]
