"""Fine-tune one leave-one-city-out fold's pretrained policy again, on demonstrations that record
their honest delay (so the default ``expert_trust=measured`` can compare them with the agent).

``benchmarks/transfer.py`` fine-tunes on the pretraining demonstrations (``pretrain.DEMOS``), which
were generated before the delay was recorded; this reruns only the fine-tuning of a fold already
pretrained by transfer.py, with fresh demonstrations in ``--work``, and evaluates it on the
held-out seeds::

    python benchmarks/finetune_fold.py --city ingolstadt7
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain import city_scenario, stage_config  # noqa: E402
from transfer import evaluate_on  # noqa: E402


def main() -> None:
    from leed_traffic.learn.serving import PolicyController
    from leed_traffic.paths import cache_dir
    from leed_traffic.pipeline import demonstration_path, run_experiment

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--city", required=True, help="The held-out city of a fold transfer.py has pretrained.")
    ap.add_argument("--episodes", type=int, default=10, help="Fine-tuning episodes.")
    ap.add_argument("--folds", type=Path, default=cache_dir() / "benchmarks" / "transfer", help="transfer.py's --work.")
    ap.add_argument("--work", type=Path, default=cache_dir() / "benchmarks" / "transfer-measured")
    ap.add_argument("--seeds", default="100,101,102", help="Held-out evaluation seeds.")
    a = ap.parse_args()
    init = a.folds / f"without-{a.city}" / "pretrained.pt"
    if not init.exists():
        sys.exit(f"{init} does not exist: run `python benchmarks/transfer.py --held-out {a.city}` first")
    cfg = stage_config(a.city, episodes=a.episodes, init=str(init), seed=0)
    demos_cfg = stage_config(a.city, episodes=1, init="", seed=0)
    cfg.demos.path = str(demonstration_path(demos_cfg, city_scenario(a.city), a.work / f"demos-{a.city}-s0",
                                            say=print, progress=False))
    run = a.work / f"fine-tuned-{a.city}"
    run_experiment(cfg, run, resume=True, say=print, progress=False)
    ctrl = PolicyController.from_run(run)
    ctrl.name = "fine-tuned (measured trust)"
    df = evaluate_on(a.city, [ctrl], [int(s) for s in a.seeds.split(",")])
    df.to_csv(a.work / f"fine-tuned-{a.city}.csv", index=False)
    print(df[["controller", "seed", "mean_delay"]].to_string(index=False))
    print(f"{a.city}: {df['mean_delay'].mean():.1f} ± {df['mean_delay'].std():.1f} s")


if __name__ == "__main__":
    main()
