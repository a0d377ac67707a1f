"""Pretrain a transferable phase policy across cities (issue 10); makes the shipped file.

One ``PhasePolicy`` (one set of weights for every intersection of every city) is trained with
LEED and max-pressure demonstrations on one city after the other: each city's stage is an
ordinary experiment of the pipeline (``run_experiment``) whose ``train.init_policy`` is the
previous stage's policy, so the weights carry from city to city (PPO's optimizer state and
reward statistics restart per stage: a choice, documented in the data card). ``--passes`` > 1
goes round the cities again. All stages share the settings the file records: the ``phase``
observation, the experiments' default reward, max green enforced and one decision interval for
every city (5 s; RESCO's maps would otherwise decide every 10 s and the time features would mean
something else), which ``--controller pretrained`` and ``--init pretrained`` replay.

Each city's demonstrations are generated once and reused by every stage and fold (``DEMOS``).
Every stage is resumable (re-running continues where it stopped).

    python benchmarks/pretrain.py                       # the shipped file (about 20 min on 2 cores)
    python benchmarks/pretrain.py --exclude helsinki --out /tmp/no-helsinki.pt   # a leave-one-out file
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE_DIR, benchmark_config, command_line, git_revision  # noqa: E402

CITIES = ("helsinki", "melbourne", "london", "munich", "paris", "cologne8", "ingolstadt7", "arterial4x4", "grid4x4")
"""Default training cities: the small bundled OSM cities (right- and left-hand traffic) and RESCO
maps of three kinds (real-city corridors, an arterial, a grid). The large OSM cities (oslo,
heidelberg, luxembourg) are left out to keep the job within minutes; they are transfer targets."""
DELTA_TIME = 5
EPISODES = 6
HIDDEN = (64, 64)
"""TrainConfig's default hidden sizes (the file records them)."""


def stage_config(city: str, *, episodes: int, init: str, seed: int, settings: dict | None = None):
    """The experiment of one city's stage (the one rule pretraining and fine-tuning share)."""
    cfg = benchmark_config(city, eval_episodes=0, observation="phase", enforce_max_green=True, rounds=1, seed=seed,
                           settings={"train.policy": "phase", "demos.llm": "max-pressure",
                                     "env.delta_time": DELTA_TIME, "train.episodes": episodes, "train.init_policy": init, **(settings or {})})
    return cfg


DEMOS = CACHE_DIR / "pretrain" / "demos"
"""Each city's max-pressure demonstrations, shared by every pretraining and transfer run (they
depend only on the city, the seed and ``stage_config``'s env settings)."""


def city_scenario(city: str):
    """The scenario every stage, fold and evaluation of ``city`` runs on (built once, then cached)."""
    from leed_traffic.pipeline import scenario_of

    return scenario_of(stage_config(city, episodes=1, init="", seed=0))


def city_demos(city: str, seed: int) -> str:
    """One city's max-pressure demonstrations (generated once, in ``DEMOS``)."""
    from leed_traffic.pipeline import demonstration_path

    cfg = stage_config(city, episodes=1, init="", seed=seed)
    return str(demonstration_path(cfg, city_scenario(city), DEMOS / f"{city}-s{seed}", say=print, progress=False))


def pretrain(cities: list[str], out: Path, *, work: Path, episodes: int = EPISODES, passes: int = 1,
             seed: int = 0, init: str = "", say=print) -> Path:
    """Train the phase policy through ``cities`` (``passes`` times) and write the pretrained file."""
    from leed_traffic.learn.pretrained import load_file, save_pretrained
    from leed_traffic.pipeline import run_experiment

    t0 = time.perf_counter()
    stages = []
    for p in range(passes):
        for city in cities:
            cfg = stage_config(city, episodes=episodes, init=init, seed=seed)
            cfg.demos.path = city_demos(city, seed)
            run = work / f"pass{p}-{len(stages):02d}-{city}"
            t = time.perf_counter()
            run_experiment(cfg, run, resume=True, say=lambda s: None, progress=False)
            say(f"  stage {len(stages) + 1}: {city} ({episodes} episodes) {time.perf_counter() - t:.0f} s")
            stages.append({"city": city, "episodes": episodes, "run": str(run)})
            init = str(run)
    last = load_file(init)
    from leed_traffic.rundir import REPLAYED_OPTIONS

    env = {k: v for k, v in last["meta"]["env"].items() if k in REPLAYED_OPTIONS}
    from leed_traffic.observations import PHASE_FEATURES

    meta = {"features": PHASE_FEATURES, "hidden_sizes": list(HIDDEN), "env": env, "cities": list(dict.fromkeys(cities)),
            "stages": stages, "episodes_per_stage": episodes, "passes": passes, "seed": seed,
            "algo": "leed", "demonstrator": "max-pressure", "command": command_line(), "git": git_revision(),
            "wall_s": round(time.perf_counter() - t0)}
    path = save_pretrained(last["policy"], out, meta)
    write_card(path, meta)
    return path


def write_card(path: Path, meta: dict) -> Path:
    """The data card beside the file (DATA_CARD.md for the shipped one)."""
    from leed_traffic.fileio import atomic_write_text
    from leed_traffic.learn.pretrained import shipped_path

    card = path.parent / "DATA_CARD.md" if path.resolve() == shipped_path().resolve() else path.with_suffix(".md")
    env = meta["env"]
    stages = "\n".join(f"| {i + 1} | {s['city']} | {s['episodes']} |" for i, s in enumerate(meta["stages"]))
    text = f"""# Pretrained phase policy: `{path.name}`

One phase-scoring actor-critic (`leed_traffic.learn.policy.PhasePolicy`, hidden sizes
{meta['hidden_sizes']}, {sum(1 for _ in meta['stages'])} training stages) that acts at any signalised
intersection of any city: it scores each green phase from the {meta['features']} features of the
movements that phase serves (`observations.PhaseObservation`, the `phase` observation).

- **Use:** `leed-traffic evaluate --city ANY --controller pretrained` (zero-shot),
  `leed-traffic train --city ANY --init pretrained` (fine-tune).
- **Made by:** `{meta['command']}` (git {meta['git']}, {meta['wall_s'] / 60:.0f} min on the machine it ran on).
- **Learner:** {meta['algo']} with {meta['demonstrator']} demonstrations (one round per city), seed {meta['seed']};
  each stage is one experiment of the pipeline starting from the previous stage's weights (the PPO
  optimizer state and the reward normalisation restart per stage).
- **Env it expects** (replayed wherever it runs): observation `{env.get('observation')}`, reward
  `{env.get('reward')}`, decision every {env.get('delta_time')} s, yellow {env.get('yellow_time')} s,
  min green {env.get('min_green')} s, max green {env.get('max_green')} s (enforced: {env.get('enforce_max_green')}).
- **Training data:** simulated traffic (SUMO 1.28) on the networks below, each city's own demand on
  its training seeds; the held-out evaluation seeds were never used. OSM-derived networks:
  © OpenStreetMap contributors, ODbL 1.0; RESCO maps from the sumo-rl package.
- **Measured transfer:** docs/transfer.md (leave one city out: zero-shot and fine-tuned against fixed
  time, actuated control and a policy trained on the city alone).
- **Limits:** trained on networks of 7-68 agents with 1-hour episodes; cities much larger, with other
  vehicle classes (buses, pedestrians' calls) or detector layouts, are outside what it has seen.
  A signal engineer should check its plans (`leed-traffic export`) before any field use.

| stage | city | episodes |
|---:|:---|---:|
{stages}
"""
    atomic_write_text(card, text)
    return card


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cities", default=",".join(CITIES))
    ap.add_argument("--exclude", default="", help="Cities to leave out (leave-one-city-out files).")
    ap.add_argument("--episodes", type=int, default=EPISODES, help="Training episodes per city and pass.")
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="Default: the shipped file in the package.")
    ap.add_argument("--work", type=Path, default=CACHE_DIR / "pretrain", help="Stage runs and demonstrations.")
    a = ap.parse_args()
    from leed_traffic.learn.pretrained import shipped_path

    excluded = set(filter(None, a.exclude.split(",")))
    cities = [c for c in a.cities.split(",") if c and c not in excluded]
    out = a.out or shipped_path()
    tag = "-".join(sorted(excluded)) or "all"
    path = pretrain(cities, out, work=a.work / f"{tag}-s{a.seed}", episodes=a.episodes, passes=a.passes, seed=a.seed)
    print(f"pretrained policy: {path}")


if __name__ == "__main__":
    main()
