"""Export: the tlLogic/WAUT file is accepted by SUMO and replays the plan; tables, models, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leed_traffic.errors import UserError
from leed_traffic.observations import PHASE_FEATURES

SECONDS = 120


def make_tiny_run(run_dir: Path) -> Path:
    """A real (tiny) IPPO run on Melbourne through the pipeline: one 120 s episode, a few seconds of CPU."""
    from leed_traffic.config import ExperimentConfig
    from leed_traffic.pipeline import run_experiment

    if not (run_dir / "policy.pt").exists():
        cfg = ExperimentConfig().apply([
            "scenario.city=melbourne", f"env.seconds={SECONDS}", "env.enforce_max_green=false", "train.algo=ippo",
            "train.episodes=1", "train.progress=false", "train.checkpoint_interval=1000", "eval.episodes=0"])
        run_experiment(cfg, run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("runs") / "melbourne-ippo")


@pytest.fixture(scope="module")
def exported(tiny_run) -> Path:
    from leed_traffic.export import export_run

    return export_run(tiny_run, period_s=60, controllers=["fixed"])


def test_period_plan_from_recorded_switches():
    from leed_traffic.export import AgentRecord, Switch, period_plan, program_phases

    rec = AgentRecord("J", ["GGrr", "rrGG", "GrGr"])
    # green 0: 0-20, 62-80, 122-140 (56 s); green 1: 22-60, 82-120 (76 s); phase 2 never served
    rec.switches = [Switch(20, 0, 1), Switch(60, 1, 0), Switch(80, 0, 1), Switch(120, 1, 0)]
    p = period_plan(rec, 0, 0.0, 140.0, yellow=2, all_red=0, min_green=5, begin=0.0, end=140.0)
    assert p.order == [1, 0]  # longest green first, then the policy's transition
    assert 2 not in p.order  # unserved phase not invented
    assert p.cycles == 2 and p.switches == 4
    assert p.cycle_s == 70 and sum(p.greens_s) == 70 - 2 * 2
    assert p.greens_s == [38, 28]  # 66 s split 76:56
    shares = dict(zip(p.order, p.green_share))
    assert shares[1] > shares[0]  # the policy gave phase 1 more green
    phases = program_phases(p, rec.greens)
    assert [s for _, s, _ in phases][1] in ("rryy", "yyrr")  # a yellow between the two greens
    # one phase held throughout -> a one-phase program (what the policy did)
    held = period_plan(AgentRecord("K", ["GGrr", "rrGG"]), 0, 0.0, 900.0, yellow=2, all_red=0, min_green=5,
                       begin=0.0, end=900.0)
    assert held.order == [0] and held.greens_s == [900]


def test_export_files_load_in_sumo_and_switch_by_period(exported, tiny_run):
    import libsumo

    from leed_traffic.sumo_env import sumo_binary

    meta = json.loads((exported / "export.json").read_text())
    assert meta["periods"] == 2 and meta["period_s"] == 60 and meta["agents"] == 41
    # plain `sumo -n NET -r ROUTES -a plans.add.xml` accepts the file and runs to the end
    proc = subprocess.run([sumo_binary("sumo"), "-n", meta["net_file"], "-r", meta["route_file"], "-a",
                           str(exported / "plans.add.xml"), "-b", str(meta["begin"]), "-e", str(meta["end"]),
                           "--no-step-log"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert "Error" not in proc.stderr

    rows = list(csv.DictReader(open(exported / "timings.csv")))
    assert {r["intersection_id"] for r in rows} == set(meta and json.loads((tiny_run / "config.json").read_text())["env"]["agents"])
    assert len(rows) == 41 * 2
    for r in rows:
        greens = [int(g) for g in r["green_splits_s"].split(" / ")]
        k = len(greens)
        assert int(r["cycle_s"]) == sum(greens) + (k * (int(r["yellow_s"]) + int(r["all_red_s"])) if k > 1 else 0)
        assert r["street_names"] and len(r["phase_states"].split(" / ")) == k
    # SUMO runs the period programs (WAUT switches at 60 s) with the green durations of the table
    libsumo.start([sumo_binary("sumo"), "-n", meta["net_file"], "-r", meta["route_file"], "-a",
                   str(exported / "plans.add.xml"), "--no-step-log", "--no-warnings"])
    try:
        for t, period in ((5, 0), (65, 1)):
            libsumo.simulationStep(t)
            for r in rows:
                if int(r["period"]) != period:
                    continue
                tls = r["intersection_id"]
                assert libsumo.trafficlight.getProgram(tls) == r["program_id"]
                logic = [lg for lg in libsumo.trafficlight.getAllProgramLogics(tls) if lg.programID == r["program_id"]][0]
                greens = [int(g) for g in r["green_splits_s"].split(" / ")]
                states = r["phase_states"].split(" / ")
                got = [(int(ph.duration), ph.state) for ph in logic.phases if ph.name.startswith("green")]
                assert got == list(zip(greens, states))
    finally:
        libsumo.close()


def test_export_comparison_models_and_spec(exported):
    cmp = pd.read_csv(exported / "comparison.csv")
    assert {"ippo", "ippo-plan", "fixed"} <= set(cmp["controller"])
    assert np.isfinite(cmp["mean_delay"]).all() and (cmp["mean_delay"] > 0).all()
    meta = json.loads((exported / "export.json").read_text())
    assert meta["models_checked_decisions"] > 0  # every exported model reproduced the policy's actions
    spec = json.loads((exported / "obs_spec.json").read_text())
    assert len(spec["agents"]) == 41
    for a, s in spec["agents"].items():
        assert (exported / s["model"]).is_file()
        assert s["layout_dim"] == s["obs_dim"]
        g = len(s["actions"])
        # the experiments' phase observation: one row of PHASE_FEATURES per green phase, with its lanes
        assert spec["observation"] == "phase" and s["obs_dim"] == g * PHASE_FEATURES and len(s["layout"]) == g
        assert all(len(row["features"]) == PHASE_FEATURES and row["in_lanes"] for row in s["layout"])
        assert all(len(x["state"]) == len(s["signal_index_links"]) for x in s["actions"])


def test_exported_model_reproduces_policy(exported, tiny_run):
    from leed_traffic.export import run_model
    from leed_traffic.learn import load_policies

    spec = json.loads((exported / "obs_spec.json").read_text())
    policy = load_policies(tiny_run)
    rng = np.random.default_rng(0)
    obs = {a: rng.random((5, s["obs_dim"])).astype(np.float32) for a, s in spec["agents"].items()}
    for i in range(5):
        want = policy.decide({a: o[i] for a, o in obs.items()})
        for a in list(spec["agents"])[:6]:
            assert int(run_model(exported / spec["agents"][a]["model"], obs[a][i:i + 1])[0]) == want[a]


def test_plan_controller_refuses_missing_plan(tmp_path):
    from leed_traffic.export import PlanController

    with pytest.raises(UserError, match="export"):
        PlanController.from_path(tmp_path / "nothing")


def test_bad_run_dirs_and_existing_output(tmp_path, exported, tiny_run):
    from leed_traffic.export import export_run

    with pytest.raises(UserError, match="does not exist"):
        export_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="config.json.*policy.pt"):
        export_run(tmp_path / "empty")
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text((tiny_run / "config.json").read_text())
    with pytest.raises(UserError, match=r"policy\.pt"):
        export_run(half)
    with pytest.raises(UserError, match="--force"):
        export_run(tiny_run, out=exported)


def test_failed_export_leaves_nothing(tmp_path, tiny_run, monkeypatch):
    import leed_traffic.export as ex

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ex, "observation_spec", boom)
    out = tmp_path / "exp"
    with pytest.raises(RuntimeError, match="disk full"):
        ex.export_run(tiny_run, out=out, evaluate_plan=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    # --force replaces a previous export as a whole
    (out).mkdir()
    (out / "stale.txt").write_text("old")
    ex.export_run(tiny_run, out=out, force=True, evaluate_plan=False)
    assert (out / "plans.add.xml").is_file() and not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]
