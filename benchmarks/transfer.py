"""Leave-one-city-out transfer of the pretrained phase policy (issue 10, item 5).

For each held-out city X: pretrain on the other cities (``pretrain.pretrain``, same settings as
the shipped file), then on X's held-out evaluation seeds measure

* ``zero-shot``: the pretrained policy as it is (``--controller pretrained``),
* ``fine-tuned``: after ``--finetune`` episodes of training on X from it (``--init``),
* ``alone``: the same learner trained on X alone from scratch for the same episodes,
* ``fixed`` and ``actuated``: the classical yardsticks (and max-pressure with max green).

Results: docs/transfer.csv (one row per city x controller x seed) and the "Leave one city out"
section of docs/transfer.md. Resumable: every stage is an experiment of the pipeline in
``--work``. Targets (issue 10): zero-shot <= 0.6 x fixed and <= 1.05 x actuated; fine-tuned <= actuated.

    python benchmarks/transfer.py --held-out helsinki,london,ingolstadt7
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE_DIR, DOCS_DIR, command_line, machine_info, markdown_table, write_section  # noqa: E402
from pretrain import CITIES, EPISODES, city_scenario, pretrain, stage_config  # noqa: E402

POOL = ("helsinki", "melbourne", "london", "munich", "cologne8", "ingolstadt7")
"""Cities of the leave-one-out folds (small ones: each fold pretrains on the five others)."""


def evaluate_on(city: str, controllers: list, seeds: list[int], **options) -> pd.DataFrame:
    """``pipeline.evaluate_controllers`` on the city's scenario (``options``: env_options, suffix)."""
    from leed_traffic.pipeline import evaluate_controllers

    frames, _ = evaluate_controllers(city_scenario(city), controllers, seeds, seconds=None, tolerate=False, **options)
    return pd.concat(frames, ignore_index=True)


def trained_on(city: str, *, init: str, episodes: int, seeds: list[int], work: Path, name: str) -> pd.DataFrame:
    """Train on ``city`` (from ``init`` or scratch) and evaluate the final sampled policy."""
    from leed_traffic.learn.serving import PolicyController
    from leed_traffic.pipeline import run_experiment
    from pretrain import city_demos

    cfg = stage_config(city, episodes=episodes, init=init, seed=0)
    cfg.demos.path = city_demos(city, 0)
    run = work / f"{name}-{city}"
    run_experiment(cfg, run, resume=True, say=lambda s: None, progress=False)
    ctrl = PolicyController.from_run(run)
    ctrl.name = name
    return evaluate_on(city, [ctrl], seeds)


def fold(city: str, *, work: Path, episodes: int, finetune: int, seeds: list[int], pool: tuple[str, ...]) -> pd.DataFrame:
    from leed_traffic.controllers import get_controller
    from leed_traffic.evaluate import MAX_GREEN_SUFFIX
    from leed_traffic.learn.serving import PretrainedController

    others = [c for c in pool if c != city]
    fw = work / f"without-{city}"
    path = pretrain(others, fw / "pretrained.pt", work=fw, episodes=episodes)
    zero = PretrainedController(str(path))
    zero.name = "zero-shot"
    frames = [evaluate_on(city, [get_controller("fixed"), get_controller("actuated"), zero], seeds),
              evaluate_on(city, [get_controller("max-pressure")], seeds, env_options={"enforce_max_green": True},
                          suffix=MAX_GREEN_SUFFIX)]
    frames.append(trained_on(city, init=str(path), episodes=finetune, seeds=seeds, work=fw, name="fine-tuned"))
    frames.append(trained_on(city, init="", episodes=finetune, seeds=seeds, work=fw, name="alone"))
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "held_out_city", city)
    return df


def table(df: pd.DataFrame) -> str:
    rows = []
    for city, g in df.groupby("held_out_city", sort=False):
        m = g.groupby("controller")["mean_delay"].agg(["mean", "std"])
        get = lambda c: m.loc[c, "mean"] if c in m.index else float("nan")  # noqa: E731
        fixed, act, zero, ft = (get(c) for c in ("fixed", "actuated", "zero-shot", "fine-tuned"))
        cell = lambda c: f"{m.loc[c, 'mean']:.1f} ± {m.loc[c, 'std']:.1f}" if c in m.index else "—"  # noqa: E731
        rows.append([city, cell("fixed"), cell("actuated"), cell("max-pressure (max green)"), cell("zero-shot"),
                     cell("fine-tuned"), cell("alone"), f"{zero / fixed:.2f}", f"{zero / act:.2f}", f"{ft / act:.2f}",
                     "yes" if zero <= 0.6 * fixed and zero <= 1.05 * act else "no",
                     "yes" if ft <= act else "no"])
    return markdown_table(["held-out city", "fixed", "actuated", "max-pressure (max green)", "zero-shot",
                           "fine-tuned", "alone", "zero/fixed", "zero/actuated", "fine-tuned/actuated",
                           "zero-shot target", "fine-tune target"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--held-out", default=",".join(POOL), help="Cities to hold out, one fold each.")
    ap.add_argument("--pool", default=",".join(POOL), help="Cities a fold pretrains on (minus the held-out one).")
    ap.add_argument("--episodes", type=int, default=EPISODES, help="Pretraining episodes per city.")
    ap.add_argument("--finetune", type=int, default=10, help="Fine-tuning (and alone) episodes on the held-out city.")
    ap.add_argument("--eval-episodes", type=int, default=3)
    ap.add_argument("--work", type=Path, default=CACHE_DIR / "transfer")
    ap.add_argument("--out", type=Path, default=DOCS_DIR)
    a = ap.parse_args()
    from leed_traffic.evaluate import held_out_seeds

    pool = tuple(c for c in a.pool.split(",") if c)
    held = [c for c in a.held_out.split(",") if c]
    csv = a.out / "transfer.csv"
    frames = []
    if csv.is_file():  # folds of earlier invocations stay (rerun a fold to replace it)
        old = pd.read_csv(csv)
        frames.append(old[~old["held_out_city"].isin(held)])
    for city in held:
        seeds = held_out_seeds(city_scenario(city), a.eval_episodes)
        frames.append(fold(city, work=a.work, episodes=a.episodes, finetune=a.finetune, seeds=seeds, pool=pool))
        df = pd.concat(frames, ignore_index=True)
        from leed_traffic.fileio import atomic_write

        atomic_write(csv, lambda p: df.to_csv(p, index=False))
        print(table(df))
    info = machine_info()
    body = "\n\n".join([
        f"Command: `{command_line()}`. Pretraining: LEED with max-pressure demonstrations, phase policy, "
        f"{a.episodes} episodes per city on the pool {', '.join(pool)} minus the held-out city "
        f"(the shipped file uses {', '.join(CITIES)}). Fine-tuned and alone: {a.finetune} episodes on the held-out "
        f"city. Mean delay (s, honest: never-inserted vehicles charged) ± std over {a.eval_episodes} held-out seeds; "
        "per-seed rows in docs/transfer.csv.",
        table(df),
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items() if k in ("date", "cores (nproc)", "cpu", "git")) + ".",
    ])
    write_section(a.out / "transfer.md", "Leave one city out", body, doc_title="# Transfer of the pretrained policy")


if __name__ == "__main__":
    main()
