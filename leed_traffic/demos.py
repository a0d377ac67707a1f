"""Demonstration generation and refinement (LEED's DG module, rounds of issue 3 section 4).

A round runs the scenario with the demonstrator controlling every agent through the environment
(an answer that is illegal at that moment holds the current phase and counts invalid). It records
each agent's trajectory (observation, action, reward, state text, reason, validity), scores it --
validity rate and return per agent next to a fixed-time reference on the same seed -- and turns
each intersection's outcome into a short feedback text that the next round adds to that
intersection's prompt. After the last round every agent keeps its best trajectories (highest
return, and only those at least as good as fixed time), which become the :class:`DemoDataset`
the learner loads; its metadata also records, per intersection, how the kept trajectories compare
with fixed time on a score that does not telescope (mean queue, ``demo_quality``), which the
learner's behaviour-cloning warm start reads (``TrainConfig.bc_pretrain_gate``).

Run directory layout (``out``)::

    run.json                 what was asked (city, demonstrator, model, seed, env options)
    fixed_time.json          per-agent fixed-time reference on the same seed
    fixed_time_s<S>.json     the same for the other seeds of a round (``episodes`` > 1)
    rounds/round_J.npz       agent trajectories of entry J (obs, actions, rewards, valid, asked)
    rounds/round_J.json      entry J's metrics: validity and return per agent, LLM usage, feedback
    rounds/round_J.texts.jsonl.gz  state text and reason of every asked decision
    metrics.json             all entries side by side (rewritten after each round)
    dataset/                 the DemoDataset (demos.npz + demos.json)

An entry is one episode of one round: J = round x episodes + episode (with one episode per round,
J is the round). A round's episodes run on demand seeds seed, seed + 1, ... and may be played in
parallel (``DemoConfig.backend``/``workers``: local processes or Ray actors, each with its own
simulation and demonstrator, one answer cache); every backend records the same trajectories.

Completed entries are never redone: re-running the same command continues after the last one.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leed_traffic.dataset import DemoDataset, AgentDemos
from leed_traffic.errors import UserError
from leed_traffic.paths import answer_cache_path
from leed_traffic.fileio import atomic_write, atomic_write_json
from leed_traffic.llm import make_demonstrator, render_state
from leed_traffic.llm.base import Decision, Demonstrator, DemonstratorError
from leed_traffic.state import IntersectionState

if TYPE_CHECKING:
    from leed_traffic.scenario import Scenario

log = logging.getLogger(__name__)

DEMOS_VERSION = 1


@dataclass
class DemoConfig:
    """Options of a generation run (the CLI's ``leed-traffic demos`` flags)."""

    city: "str | Scenario"
    """A ``--city`` argument, or the built Scenario an experiment runs on (demand overrides kept)."""
    llm: str = "auto"
    """auto | claude | openai | local | max-pressure | longest-queue | random (uniform over the
    legal phases: the worst-case reference)."""
    rounds: int = 3
    """Generation + refinement rounds (round 1 has no feedback)."""
    seconds: int | None = None
    """Episode length; default: the scenario's (one hour for the bundled cities)."""
    seed: int = 0
    """Demand / SUMO seed of every round and of the fixed-time reference."""
    out: Path | None = None
    """Run directory; default ``runs/demos/<city>-<llm>-s<seed>``."""
    keep: int = 2
    """Best trajectories kept per agent."""
    require_beat_fixed: bool = True
    """Keep only trajectories from rounds that beat fixed time city-wide, or whose own return is at
    least fixed time's on that agent; agents with none are left out of the dataset (listed in its
    metadata) so a weak demonstrator's bad decisions are not 'expert'."""
    model: str | None = None
    """Override of the backend's model (claude/openai model name, local GGUF path)."""
    cache: Path | None = None
    """Answer cache file; default the user cache's one (``paths.answer_cache_path()``), shared by
    every run: an answer is keyed by backend, model, prompt version and state, so a second run
    never pays again for the same question."""
    env_options: dict[str, Any] = field(default_factory=dict)
    """Extra ``make_env`` options (delta_time, yellow_time, min_green, reward, ...)."""
    llm_options: dict[str, Any] = field(default_factory=dict)
    """Extra demonstrator options (e.g. max_batch=20, or http_client= in tests)."""
    progress: bool = True
    episodes: int = 1
    """Episodes per round, on demand seeds ``seed``, ``seed + 1``, ...: each seed is its own chain
    of refinement (episode e of round k + 1 gets the feedback of episode e of round k), and every
    (round, episode) trajectory is a candidate for ``select_best``. 1: one episode per round, the
    layout and dataset of before."""
    backend: str = "auto"
    """Where a round's episodes are played (``learn.workers.BACKENDS``): inprocess, process (local
    child processes) or ray (one actor per worker, on this machine or a cluster); auto: inprocess
    for one worker, process otherwise. Each worker holds its own simulation and demonstrator and
    uses the same answer cache file (sqlite in WAL mode; on a multi-machine Ray cluster give
    ``cache`` a path on a shared filesystem, or every node keeps its own)."""
    workers: int = 1
    """Episodes played at once (at most ``episodes`` are used)."""
    ray_address: str | None = None
    """``--backend ray``: ``auto`` or HOST:PORT of a running cluster; None starts a local Ray."""


# ---------------------------------------------------------------------------- small helpers
def _write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@dataclass
class Trajectory:
    """One agent's decisions in one round."""

    obs: list[np.ndarray] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    valid: list[bool] = field(default_factory=list)
    asked: list[bool] = field(default_factory=list)
    """False where only one phase was legal (nothing to decide, nobody asked)."""
    queues: dict[str, list[int]] = field(default_factory=dict)
    """Per approach label, queued vehicles at each decision (feedback: where queues grew)."""

    def add_state(self, s: IntersectionState) -> None:
        for a in s.approaches:
            self.queues.setdefault(_approach_label(a.street, a.direction), []).append(a.queued)

    @property
    def ret(self) -> float:
        return float(np.sum(self.rewards)) if self.rewards else 0.0

    def switches(self) -> int:
        return int(sum(1 for a, b in zip(self.actions, self.actions[1:]) if a != b))

    def mean_queues(self) -> dict[str, float]:
        return {k: float(np.mean(v)) for k, v in self.queues.items() if v}


def _approach_label(street: str, direction: str) -> str:
    return f"{street.strip() or 'unnamed road'} ({direction})"


# ---------------------------------------------------------------------------- policies
class FixedTimeReference:
    """Fixed time through the environment: each agent cycles its green phases with the green
    durations of the network's own signal program (rounded to decision steps), so its reward per
    agent is comparable with the demonstrator's on the same seed. It exists next to the classical
    ``fixed`` controller because demonstrations need each agent's trajectory and reward through
    the env, which SUMO running the program itself does not give; both read the same program
    (``netfile.first_program``). City-wide trip metrics of SUMO's real fixed-time program come
    from ``leed_traffic.evaluate``."""

    def __init__(self, env: Any, default_green: float = 30.0) -> None:
        from leed_traffic.netfile import first_program, read_net

        net = read_net(env.scenario.net_file)
        self.green: dict[str, list[float]] = {}
        for a in env.possible_agents:
            greens = env.signals[a].topo.greens
            phases = first_program(net, a).getPhases()
            dur = {}
            for p in phases:
                dur.setdefault(p.state, float(p.duration))
            self.green[a] = [dur.get(g, default_green) for g in greens]
        self.yellow = float(env.config.yellow_time + env.config.all_red_time)

    def act(self, s: IntersectionState) -> int:
        g = self.green[s.agent_id]
        nxt = (s.current_phase + 1) % len(g)
        if s.time_in_phase >= self.yellow + g[s.current_phase] and nxt in s.legal_actions:
            return nxt
        return s.current_phase


def run_episode(
    env: Any,
    seed: int,
    choose: Callable[[list[IntersectionState]], list[Decision]],
    on_step: Callable[[int], None] | None = None,
    texts: list[dict[str, Any]] | None = None,
    feedback: Mapping[str, str] | None = None,
    stats: dict[str, Any] | None = None,
) -> dict[str, Trajectory]:
    """Run one episode (``env.play_episode``) where ``choose`` decides for the agents that have a
    choice; the others hold (their only legal phase). Records every agent's trajectory; ``texts``
    collects the state text and reason of every asked decision; ``stats`` receives the env's
    episode-end statistics (the honest ``mean_delay``, what the learner's curve reads too)."""
    from leed_traffic.env import play_episode

    trajs = {a: Trajectory() for a in env.possible_agents}
    step = 0

    def act(obs: dict[str, np.ndarray]) -> dict[str, int]:
        states = {a: env.intersection_state(a) for a in env.agents}
        ask = [s for s in states.values() if len(s.legal_actions) > 1]
        decisions = dict(zip((s.agent_id for s in ask), choose(ask))) if ask else {}
        actions: dict[str, int] = {}
        for a, s in states.items():
            d = decisions.get(a)
            t = trajs[a]
            t.obs.append(np.asarray(obs[a], dtype=np.float32))
            t.add_state(s)
            if d is None:
                actions[a] = s.legal_actions[0] if s.legal_actions else s.current_phase
                t.valid.append(True)
                t.asked.append(False)
            else:
                actions[a] = int(d.phase)
                t.valid.append(bool(d.valid))
                t.asked.append(True)
                if texts is not None:
                    texts.append(
                        {"agent": a, "time": s.time, "phase": int(d.phase), "valid": d.valid,
                         "reason": d.reason,
                         "text": render_state(s, (feedback or {}).get(a))}
                    )
            t.actions.append(actions[a])
        return actions

    def after_step(actions: dict[str, int], rewards: dict[str, float]) -> None:
        nonlocal step
        for a in actions:
            trajs[a].rewards.append(float(rewards.get(a, 0.0)))
        step += 1
        if on_step is not None:
            on_step(step)

    info = play_episode(env, seed, act, after_step)
    if stats is not None:
        stats.update({k: float(v) for k, v in info.items() if isinstance(v, (int, float))})
    return trajs


# ---------------------------------------------------------------------------- scoring + feedback
def score(trajs: Mapping[str, Trajectory], fixed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    per_agent = {}
    for a, t in trajs.items():
        asked = int(np.sum(t.asked))
        invalid = int(np.sum([not v for v, k in zip(t.valid, t.asked) if k]))
        per_agent[a] = {
            "return": t.ret,
            "fixed_return": float(fixed.get(a, {}).get("return", float("nan"))),
            "asked": asked,
            "invalid": invalid,
            "validity": 1.0 - invalid / asked if asked else 1.0,
            "switches": t.switches(),
            "mean_queues": t.mean_queues(),
        }
    asked = sum(v["asked"] for v in per_agent.values())
    invalid = sum(v["invalid"] for v in per_agent.values())
    total = float(sum(v["return"] for v in per_agent.values()))
    fixed_total = float(sum(v["fixed_return"] for v in per_agent.values()))
    beats = sum(1 for v in per_agent.values() if v["return"] >= v["fixed_return"])
    return {
        "agents": per_agent,
        "return": total,
        "fixed_return": fixed_total,
        "mean_return": total / max(1, len(per_agent)),
        "validity": 1.0 - invalid / asked if asked else 1.0,
        "asked": asked,
        "invalid": invalid,
        "agents_beating_fixed": beats,
    }


def feedback_text(agent: Mapping[str, Any], fixed: Mapping[str, Any]) -> str:
    """One or two deterministic sentences about an intersection's last round, for its next prompt."""
    parts = []
    r, fr = agent["return"], agent["fixed_return"]
    if np.isfinite(fr):
        verdict = "better than" if r >= fr else "worse than"
        parts.append(f"waiting-time reward {r:.1f}, {verdict} fixed time ({fr:.1f})")
    if agent["invalid"]:
        parts.append(f"{agent['invalid']} of {agent['asked']} answers were not legal and held the phase")
    mine, ref = agent.get("mean_queues", {}), fixed.get("mean_queues", {})
    worse = sorted(
        ((mine[k] - ref.get(k, 0.0), k) for k in mine if mine[k] - ref.get(k, 0.0) >= 0.5),
        reverse=True,
    )
    if worse:
        d, k = worse[0]
        parts.append(f"queues grew most from {k} ({mine[k]:.1f} vs {ref.get(k, 0.0):.1f} under fixed time)")
    fs = fixed.get("switches")
    if fs is not None:
        parts.append(f"you switched {agent['switches']} times (fixed time {fs})")
    return "; ".join(parts) + "." if parts else ""


# ---------------------------------------------------------------------------- persistence
def _save_round(out: Path, k: int, trajs: Mapping[str, Trajectory], metrics: dict, texts: list[dict]) -> None:
    rounds = out / "rounds"
    arrays: dict[str, np.ndarray] = {}
    for a, t in trajs.items():
        obs = np.stack(t.obs).astype(np.float32) if t.obs else np.zeros((0, 0), np.float32)
        arrays[f"{a}/obs"] = obs
        arrays[f"{a}/actions"] = np.asarray(t.actions, dtype=np.int64)
        arrays[f"{a}/rewards"] = np.asarray(t.rewards, dtype=np.float32)
        arrays[f"{a}/valid"] = np.asarray(t.valid, dtype=bool)
        arrays[f"{a}/asked"] = np.asarray(t.asked, dtype=bool)

    def write_npz(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, **arrays)

    def write_texts(p: Path) -> None:
        with gzip.open(p, "wt", encoding="utf-8") as f:
            for row in texts:
                f.write(json.dumps(row, default=_json_default) + "\n")

    atomic_write(rounds / f"round_{k}.texts.jsonl.gz", write_texts)
    atomic_write(rounds / f"round_{k}.npz", write_npz)
    _write_json(rounds / f"round_{k}.json", metrics)  # written last: marks the round complete


def _load_round(out: Path, k: int, agents: Sequence[str]) -> tuple[dict[str, AgentDemos], dict] | None:
    mpath, npath = out / "rounds" / f"round_{k}.json", out / "rounds" / f"round_{k}.npz"
    if not mpath.exists() or not npath.exists():
        return None
    try:
        metrics = json.loads(mpath.read_text())
        with np.load(npath) as z:
            demos = {
                a: AgentDemos(
                    z[f"{a}/obs"], z[f"{a}/actions"], z[f"{a}/rewards"],
                    np.full(len(z[f"{a}/actions"]), k, dtype=np.int64), z[f"{a}/valid"],
                )
                for a in agents
            }
    except (OSError, ValueError, KeyError) as e:
        log.warning("round %d files are unreadable (%s); it will be run again", k, e)
        return None
    return demos, metrics


def select_best(
    rounds: Sequence[tuple[dict[str, AgentDemos], dict]],
    keep: int,
    require_beat_fixed: bool,
) -> tuple[dict[str, AgentDemos], dict[str, list[int]]]:
    """Per agent, the ``keep`` highest-return trajectories.

    With ``require_beat_fixed`` a trajectory counts as expert data only if its round beat fixed
    time city-wide (summed return) or the agent itself beat fixed time. Per-intersection returns
    are noisy (a good controller may hold one light to clear its neighbours), so a demonstrator
    that wins over the whole city is trusted at every intersection, while one that loses overall
    (a weak LLM) is trusted only where it did better locally.
    """
    agents = sorted({a for demos, _ in rounds for a in demos})
    out: dict[str, AgentDemos] = {}
    kept: dict[str, list[int]] = {}
    for a in agents:
        cands = []
        for k, (demos, metrics) in enumerate(rounds):
            m = metrics["agents"].get(a)
            if a not in demos or m is None or len(demos[a]) == 0:
                continue
            city_wins = metrics.get("return", -np.inf) >= metrics.get("fixed_return", np.inf)
            if require_beat_fixed and not (city_wins or m["return"] >= m["fixed_return"]):
                continue
            cands.append((m["return"], -k, demos[a]))
        cands.sort(key=lambda c: (c[0], c[1]), reverse=True)
        chosen = [c[2] for c in cands[: max(0, keep)]]
        if not chosen:
            continue
        chosen.sort(key=lambda d: int(d.episode[0]))
        out[a] = AgentDemos(*(np.concatenate([getattr(d, f) for d in chosen]) for f in ("obs", "actions", "rewards", "episode", "valid")))
        kept[a] = [int(d.episode[0]) for d in chosen]
    return out, kept


def _total_queue(m: Mapping[str, Any] | None) -> float | None:
    """Mean queue at one intersection over an episode: the per-approach means summed."""
    q = (m or {}).get("mean_queues")
    return float(sum(q.values())) if isinstance(q, Mapping) else None


def demo_quality(
    rounds: Sequence[tuple[dict[str, AgentDemos], dict]],
    kept: Mapping[str, Sequence[int]],
    fixed: Mapping[str, Any],
) -> dict[str, Any]:
    """Per intersection, the kept trajectories against fixed time on the mean queue (vehicles
    halting on the approaches, mean over decision steps, summed over approaches; lower is better).

    The selection (``select_best``) judges by the env's reward return, which for sumo-rl's
    diff-waiting-time reward telescopes to the end state (a lucky final minute passes a bad
    controller); the queue averages over the whole episode. ``agents[a]``: ``demos`` (mean over a's
    kept rounds), ``fixed``, ``beats_fixed`` (demos <= fixed; None when not recorded); ``city``: the
    same summed over the intersections, per kept round averaged over the rounds any agent kept,
    and ``delay`` / ``fixed_delay``: the honest mean delay (s/veh, never-inserted vehicles charged)
    of those rounds and of fixed time, the number a learner compares with its own training
    episodes (``learn.demo_batch.Demonstrations.agent_delay``); None when not recorded (datasets
    made before these were recorded).
    """
    fixed_agents = fixed.get("agents", {})
    agents: dict[str, dict[str, Any]] = {}
    for a, ks in kept.items():
        qs = [_total_queue(rounds[k][1].get("agents", {}).get(a)) for k in ks if k < len(rounds)]
        qs = [q for q in qs if q is not None]
        fq = _total_queue(fixed_agents.get(a))
        demo_q = float(np.mean(qs)) if qs else None
        agents[a] = {"demos": demo_q, "fixed": fq,
                     "beats_fixed": bool(demo_q <= fq) if demo_q is not None and fq is not None else None}
    used = sorted({k for ks in kept.values() for k in ks if k < len(rounds)})
    city_rounds = []
    for k in used:
        per = [_total_queue(m) for m in rounds[k][1].get("agents", {}).values()]
        if per and all(q is not None for q in per):
            city_rounds.append(float(sum(per)))
    fixed_per = [_total_queue(m) for m in fixed_agents.values()]
    city_fixed = float(sum(fixed_per)) if fixed_per and all(q is not None for q in fixed_per) else None
    city_demo = float(np.mean(city_rounds)) if city_rounds else None
    delays = [rounds[k][1].get("mean_delay") for k in used]
    delay = float(np.mean(delays)) if delays and all(d is not None for d in delays) else None
    fixed_delay = fixed.get("mean_delay")
    return {
        "score": "mean queue per intersection (halting vehicles on its approaches, mean over "
                 "decision steps); lower is better",
        "city": {"demos": city_demo, "fixed": city_fixed,
                 "beats_fixed": bool(city_demo <= city_fixed)
                 if city_demo is not None and city_fixed is not None else None,
                 "delay": delay, "fixed_delay": float(fixed_delay) if fixed_delay is not None else None},
        "agents": agents,
    }


# ---------------------------------------------------------------------------- progress
class _Progress:
    """rich progress bar with the demonstrator's running totals (decisions, calls, cache hits,
    tokens, cost, validity); silent when disabled or not a terminal."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False,
        )
        self.bar.start()
        self.task = self.bar.add_task("", total=total, info="")

    def start(self, description: str) -> None:
        if self.bar is not None:
            self.bar.reset(self.task, description=description, info="")

    def update(self, step: int, dem: Demonstrator | None) -> None:
        if self.bar is None:
            return
        info = ""
        if dem is not None:
            s = dem.stats
            info = f"decisions {s.decisions} · calls {s.calls} · cache hits {s.cache_hits}"
            if dem.is_llm:
                info += f" · tokens {s.input_tokens + s.cached_tokens}+{s.output_tokens}"
                if getattr(dem, "backend", "") != "local":
                    info += f" · ${s.cost_usd:.4f}"
            info += f" · valid {s.validity:.1%}"
        self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# ---------------------------------------------------------------------------- main entry
def generate_demos(
    city: "str | Scenario",
    llm: str = "auto",
    rounds: int = 3,
    seconds: int | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    **options: Any,
) -> Path:
    """Run (or resume) generation + refinement rounds and save the dataset; returns its directory.

    ``options`` are further :class:`DemoConfig` fields (keep, require_beat_fixed, model, cache,
    env_options, llm_options, progress).
    """
    cfg = DemoConfig(city=city, llm=llm, rounds=rounds, seconds=seconds, seed=seed,
                     out=Path(out) if out is not None else None, **options)
    return run(cfg)


def run(cfg: DemoConfig) -> Path:
    from leed_traffic.env import make_env
    from leed_traffic.llm.factory import resolve_auto

    if cfg.rounds < 1:
        raise UserError(f"--rounds must be at least 1 (got {cfg.rounds}).")
    llm = cfg.llm
    if llm == "auto":
        llm, why = resolve_auto()
        log.info("demonstrator auto -> %s (%s)", llm, why)
    city = cfg.city if isinstance(cfg.city, str) else cfg.city.city  # a name or a built Scenario
    out = cfg.out or Path("runs") / "demos" / f"{city}-{llm}-s{cfg.seed}"
    out.mkdir(parents=True, exist_ok=True)

    env_opts = dict(cfg.env_options)
    if cfg.seconds is not None:
        env_opts["seconds"] = cfg.seconds
    env = make_env(cfg.city, seed=cfg.seed, **env_opts)
    agents = list(env.possible_agents)
    if not agents:
        raise UserError(f"{city} has no controllable traffic lights: nothing to demonstrate.")
    dem = make_demonstrator(llm, cache=cfg.cache or answer_cache_path(), model=cfg.model,
                            agents=agents, **cfg.llm_options)
    log.info("demonstrator: %s", dem.describe())
    if dem.name == "local":
        from leed_traffic.llm.local import NEAR_CHANCE_NOTE

        log.warning("note: %s", NEAR_CHANCE_NOTE)

    run_info = {
        "version": DEMOS_VERSION, "city": city, "scenario_hash": env.scenario.hash,
        "demonstrator": dem.name, "model": dem.model, "is_llm": dem.is_llm,
        "prompt_version": getattr(dem, "prompt_version", None), "seed": cfg.seed,
        "seconds": env.end - env.begin, "env": env.describe()["config"],
    }
    _check_run_info(out / "run.json", run_info)
    _write_json(out / "run.json", run_info)

    steps = int(np.ceil((env.end - env.begin) / env.config.delta_time))
    E = max(1, int(cfg.episodes))
    seeds = [cfg.seed + e for e in range(E)]
    bar = _Progress(cfg.progress, steps if E == 1 else E)
    pool = _episode_pool(cfg, env, dem, llm, agents, env_opts, bar)
    try:
        fixed_by_seed = _fixed_references(pool, out, seeds, bar)
        fixed = _mean_fixed([fixed_by_seed[sd] for sd in seeds])
        done: list[tuple[dict[str, AgentDemos], dict]] = []
        feedback: list[dict[str, str]] = [{} for _ in seeds]
        for k in range(cfg.rounds):
            entries = [k * E + e for e in range(E)]  # trajectory ids: one per (round, episode)
            loaded = {e: _load_round(out, j, agents) for e, j in enumerate(entries)}
            todo = [e for e in range(E) if loaded[e] is None]
            for e in range(E):
                if loaded[e] is not None:
                    feedback[e] = loaded[e][1].get("next_feedback", {})
                    log.info("round %d%s already complete: %s", k + 1, f" episode {e + 1}" if E > 1 else "",
                             _summary(loaded[e][1]))
            bar.start(f"{city} round {k + 1}/{cfg.rounds} ({dem.name})" + (f", {len(todo)} episodes" if E > 1 else ""))
            try:
                played = dict(zip(todo, pool.play([(seeds[e], feedback[e]) for e in todo])))
            except DemonstratorError as e:
                raise DemonstratorError(
                    f"round {k + 1} interrupted: {e}. Re-run the same command to resume "
                    "(completed rounds are kept and answers so far are cached)."
                ) from None
            for e, j in enumerate(entries):
                if loaded[e] is not None:
                    done.append(loaded[e])
                    continue
                ep = played[e]
                metrics = score(ep.trajs, fixed_by_seed[seeds[e]]["agents"])
                metrics.update(
                    mean_delay=ep.stats.get("mean_delay"),
                    round=k + 1,
                    wall_s=ep.wall_s,
                    llm=ep.llm,
                    feedback_used=bool(feedback[e]),
                )
                if E > 1:
                    metrics.update(episode=e + 1, seed=seeds[e])
                feedback[e] = {a: feedback_text(m, fixed_by_seed[seeds[e]]["agents"].get(a, {}))
                               for a, m in metrics["agents"].items()}
                metrics["next_feedback"] = feedback[e]
                _save_round(out, j, ep.trajs, metrics, ep.texts)
                demos = {a: AgentDemos(np.stack(t.obs).astype(np.float32), np.asarray(t.actions, np.int64),
                                       np.asarray(t.rewards, np.float32), np.full(len(t.actions), j, np.int64),
                                       np.asarray(t.valid, bool)) for a, t in ep.trajs.items()}
                done.append((demos, metrics))
                log.info("round %d%s: %s", k + 1, f" episode {e + 1}" if E > 1 else "", _summary(metrics))
            _write_metrics(out, done, fixed, dem)
    finally:
        bar.close()
        pool.close()
        env.close()
        dem.close()

    _write_metrics(out, done, fixed, dem)
    best, kept = select_best(done, cfg.keep, cfg.require_beat_fixed)
    meta = {
        **{k: v for k, v in run_info.items() if k != "env"},
        "env": run_info["env"],
        "rounds": len(done),
        "per_round": [_round_row(m) for _, m in done],
        "fixed_time": {"return": fixed["return"], "method": fixed["method"]},
        "kept_rounds": kept,
        "keep": cfg.keep,
        "require_beat_fixed": cfg.require_beat_fixed,
        "agents_without_demos": sorted(set(agents) - set(best)),
        "quality": demo_quality(done, kept, fixed),
        "obs_dims": {a: int(d.obs.shape[1]) if d.obs.ndim == 2 else 0 for a, d in best.items()},
    }
    if dem.name == "local":
        from leed_traffic.llm.local import NEAR_CHANCE_NOTE

        meta["note"] = NEAR_CHANCE_NOTE
    path = DemoDataset(agents=best, metadata=meta).save(out / "dataset")
    log.info("dataset: %s (%d of %d agents have demonstrations)", path, len(best), len(agents))
    return path


def _check_run_info(path: Path, info: dict) -> None:
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return
    keys = ("city", "scenario_hash", "demonstrator", "model", "prompt_version", "seed", "seconds")
    diff = [k for k in keys if old.get(k) != info.get(k)]
    if diff:
        raise UserError(
            f"{path.parent} holds a different run ({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); "
            "use another --out or delete it."
        )


# ---------------------------------------------------------------------------- a round's episodes
@dataclass
class _PlayedEpisode:
    """One demonstrator episode, as a worker returns it (plain, picklable data)."""

    trajs: dict[str, Trajectory]
    texts: list[dict[str, Any]]
    stats: dict[str, float]
    """The env's episode-end statistics (honest ``mean_delay``, ...)."""
    llm: dict[str, Any]
    """The demonstrator's usage in this episode (calls, cache hits, tokens, cost)."""
    wall_s: float


def fixed_episode(env: Any, seed: int, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The fixed-time reference of one seed: program green durations cycled through the env."""
    ref = FixedTimeReference(env)
    stats: dict[str, Any] = {}
    trajs = run_episode(env, seed, lambda states: [Decision(ref.act(s), "fixed time") for s in states],
                        on_step=on_step, stats=stats)
    agents = {a: {"return": t.ret, "switches": t.switches(), "mean_queues": t.mean_queues()} for a, t in trajs.items()}
    return {
        "method": "program green durations cycled through the environment (same seed, same rules)",
        "seed": seed,
        "return": float(sum(v["return"] for v in agents.values())),
        "mean_delay": stats.get("mean_delay"),
        "agents": agents,
    }


def demo_episode(env: Any, dem: Demonstrator, seed: int, feedback: Mapping[str, str],
                 on_step: Callable[[int], None] | None = None) -> _PlayedEpisode:
    """One episode of a round: ``dem`` decides, with each intersection's ``feedback``."""
    before, texts, stats = dem.stats.as_dict(), [], {}
    t0 = time.perf_counter()
    trajs = run_episode(env, seed, lambda states: dem.decide(states, feedback), on_step=on_step, texts=texts,
                        feedback=feedback, stats=stats)
    after = dem.stats.as_dict()
    return _PlayedEpisode(trajs, texts, stats, {key: after[key] - before[key] for key in after},
                          time.perf_counter() - t0)


@dataclass(frozen=True)
class _PlayerSpec:
    """What a worker needs to build its own simulation and demonstrator (picklable)."""

    city: Any  # a --city argument or a built Scenario
    env_options: dict[str, Any]
    llm: str
    cache: Path
    model: str | None
    agents: tuple[str, ...]
    llm_options: dict[str, Any]

    def build(self) -> tuple[Any, Demonstrator]:
        from leed_traffic.env import make_env

        env = make_env(self.city, **self.env_options)
        return env, make_demonstrator(self.llm, cache=self.cache, model=self.model, agents=list(self.agents),
                                      **self.llm_options)


class _Player:
    """Plays episodes with one simulation and one demonstrator, built once per worker."""

    def __init__(self, spec: _PlayerSpec):
        self.env, self.dem = spec.build()

    def play(self, seed: int, feedback: Mapping[str, str]) -> _PlayedEpisode:
        return demo_episode(self.env, self.dem, seed, feedback)

    def fixed(self, seed: int) -> dict[str, Any]:
        return fixed_episode(self.env, seed)

    def close(self) -> None:
        self.env.close()
        self.dem.close()


_PROCESS_PLAYER: _Player | None = None


def _process_init(spec: _PlayerSpec) -> None:
    global _PROCESS_PLAYER
    _PROCESS_PLAYER = _Player(spec)


def _process_call(method: str, *args: Any) -> Any:
    assert _PROCESS_PLAYER is not None
    return getattr(_PROCESS_PLAYER, method)(*args)


class _EpisodePool:
    """A round's episodes on one of ``learn.workers.BACKENDS``; results in job order.

    In-process it reuses the run's own simulation and demonstrator (the round's progress bar
    follows the decisions); the other backends give every worker its own, built once."""

    def __init__(self, backend: str, workers: int, spec: _PlayerSpec, env: Any, dem: Demonstrator,
                 bar: _Progress, ray_address: str | None = None):
        self.backend, self.workers, self.env, self.dem, self.bar = backend, workers, env, dem, bar
        self._executor: Any = None
        self._actors: list[Any] = []
        self._started_ray = False
        if backend == "process":
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_process_init, initargs=(spec,))
        elif backend == "ray":
            from leed_traffic.learn.workers import connect_ray, import_ray

            ray = import_ray()
            self._started_ray = connect_ray(ray_address, workers)
            actor = ray.remote(num_cpus=1)(_Player)
            self._actors = [actor.remote(spec) for _ in range(workers)]

    def _map(self, method: str, jobs: list[tuple[Any, ...]], local: Callable[..., Any]) -> list[Any]:
        if not jobs:
            return []
        if self.backend == "inprocess":
            results = []
            for i, job in enumerate(jobs):
                results.append(local(*job))
                if len(jobs) > 1:
                    self.bar.update(i + 1, self.dem)
            return results
        if self.backend == "process":
            from concurrent.futures.process import BrokenProcessPool

            futures = [self._executor.submit(_process_call, method, *job) for job in jobs]
            try:
                results = []
                for i, f in enumerate(futures):
                    results.append(f.result())
                    self.bar.update(i + 1, None)
                return results
            except BrokenProcessPool:
                raise UserError("a demonstration worker process died (out of memory?); re-run the same "
                                "command to resume from the last complete round.") from None
        import ray

        refs = [getattr(self._actors[i % len(self._actors)], method).remote(*job) for i, job in enumerate(jobs)]
        try:
            results = ray.get(refs)
            self.bar.update(len(results), None)
            return results
        except ray.exceptions.RayError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"a demonstration worker failed on Ray ({first}); re-run the same command to resume "
                            "from the last complete round.") from None

    def play(self, jobs: list[tuple[int, Mapping[str, str]]]) -> list[_PlayedEpisode]:
        """Play ``(seed, feedback)`` episodes with the demonstrator."""
        one = len(jobs) == 1 and self.backend == "inprocess"
        return self._map("play", list(jobs), lambda seed, fb: demo_episode(
            self.env, self.dem, seed, fb, on_step=(lambda i: self.bar.update(i, self.dem)) if one else None))

    def fixed(self, seeds: list[int]) -> list[dict[str, Any]]:
        """Fixed-time references of ``seeds``."""
        one = len(seeds) == 1 and self.backend == "inprocess"
        return self._map("fixed", [(sd,) for sd in seeds], lambda sd: fixed_episode(
            self.env, sd, on_step=(lambda i: self.bar.update(i, None)) if one else None))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
        if self._actors:
            import ray

            for a in self._actors:
                try:
                    ray.get(a.close.remote(), timeout=30)
                except Exception:  # noqa: BLE001 - a dead actor has nothing left to close
                    pass
                ray.kill(a)
            if self._started_ray:
                ray.shutdown()


def _episode_pool(cfg: DemoConfig, env: Any, dem: Demonstrator, llm: str, agents: list[str],
                  env_opts: dict[str, Any], bar: _Progress) -> _EpisodePool:
    """The pool ``cfg.backend`` / ``cfg.workers`` ask for (never more workers than episodes)."""
    workers = max(1, min(int(cfg.workers), max(1, int(cfg.episodes))))
    if cfg.backend == "auto" and workers == 1:
        backend = "inprocess"
    else:
        from leed_traffic.learn.workers import check_backend, resolve_backend

        backend = resolve_backend(cfg.backend, workers)
        check_backend(backend, cfg.ray_address)
    spec = _PlayerSpec(cfg.city, dict(env_opts), llm, Path(cfg.cache or answer_cache_path()), cfg.model,
                       tuple(agents), dict(cfg.llm_options))
    return _EpisodePool(backend, workers, spec, env, dem, bar, cfg.ray_address)


def _fixed_references(pool: _EpisodePool, out: Path, seeds: list[int], bar: _Progress) -> dict[int, dict[str, Any]]:
    """Fixed-time reference per seed (``fixed_time.json`` for the first, ``fixed_time_s<seed>.json``
    for the others), played where missing or unreadable."""
    paths = {sd: out / ("fixed_time.json" if i == 0 else f"fixed_time_s{sd}.json") for i, sd in enumerate(seeds)}
    refs: dict[int, dict[str, Any]] = {}
    for sd, path in paths.items():
        try:
            refs[sd] = json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    todo = [sd for sd in seeds if sd not in refs]
    if todo:
        bar.start("fixed-time reference" + (f", {len(todo)} seeds" if len(todo) > 1 else ""))
        for sd, data in zip(todo, pool.fixed(todo)):
            _write_json(paths[sd], data)
            refs[sd] = data
    return refs


def _mean_fixed(refs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fixed-time reference the dataset's quality compares with: the seeds' mean (one seed: itself)."""
    if len(refs) == 1:
        return refs[0]
    agents: dict[str, dict[str, Any]] = {}
    for a in refs[0]["agents"]:
        per = [r["agents"].get(a, {}) for r in refs]
        approaches = {k for p in per for k in (p.get("mean_queues") or {})}
        agents[a] = {"return": float(np.mean([p.get("return", 0.0) for p in per])),
                     "mean_queues": {k: float(np.mean([(p.get("mean_queues") or {}).get(k, 0.0) for p in per]))
                                     for k in approaches}}
    delays = [r.get("mean_delay") for r in refs]
    return {"method": refs[0]["method"] + f"; mean over seeds {[r.get('seed') for r in refs]}",
            "return": float(np.mean([r["return"] for r in refs])),
            "mean_delay": float(np.mean(delays)) if all(d is not None for d in delays) else None,
            "agents": agents}


def _round_row(m: Mapping[str, Any]) -> dict[str, Any]:
    llm = m.get("llm", {})
    return {
        "round": m["round"], "validity": m["validity"], "return": m["return"],
        "fixed_return": m["fixed_return"], "mean_return": m["mean_return"],
        "agents_beating_fixed": m["agents_beating_fixed"], "asked": m["asked"], "invalid": m["invalid"],
        "calls": llm.get("calls", 0), "cache_hits": llm.get("cache_hits", 0),
        "input_tokens": llm.get("input_tokens", 0), "cached_tokens": llm.get("cached_tokens", 0),
        "output_tokens": llm.get("output_tokens", 0), "cost_usd": llm.get("cost_usd", 0.0),
        "wall_s": m.get("wall_s", 0.0),
    }


def _summary(m: Mapping[str, Any]) -> str:
    r = _round_row(m)
    return (f"validity {r['validity']:.1%}, return {r['return']:.1f} (fixed time {r['fixed_return']:.1f}), "
            f"{r['agents_beating_fixed']} agents >= fixed, {r['calls']} calls, {r['cache_hits']} cache hits, "
            f"${r['cost_usd']:.4f}, {r['wall_s']:.0f} s")


def _write_metrics(out: Path, done: Sequence[tuple[dict, dict]], fixed: Mapping[str, Any], dem: Demonstrator) -> None:
    _write_json(out / "metrics.json", {
        "demonstrator": dem.name, "model": dem.model, "is_llm": dem.is_llm,
        "fixed_return": fixed["return"], "rounds": [_round_row(m) for _, m in done],
    })
