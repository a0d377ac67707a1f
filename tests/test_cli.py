"""The command line end to end, and its answers to bad input: one sentence, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "COLUMNS": "200"}  # rich wraps tables to the terminal width
    return subprocess.run([sys.executable, "-m", "leed_traffic.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def assert_user_error(p: subprocess.CompletedProcess, fragment: str) -> None:
    assert p.returncode == 2, p.stdout + p.stderr
    assert fragment in p.stderr, p.stderr
    assert "Traceback" not in p.stderr + p.stdout


def test_build_prints_directory_and_agents():
    p = cli("build", "--city", "melbourne", "--no-check")
    assert p.returncode == 0, p.stderr
    assert "agents: 41" in p.stdout
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("scenario:"))
    import json

    meta = json.loads((Path(line.split(":", 1)[1].strip()) / "scenario.json").read_text())
    for key in ("city", "net_file", "route_files", "n_agents", "agents", "begin", "end"):
        assert key in meta
    assert meta["n_agents"] == len(meta["agents"]) == 41


@pytest.mark.parametrize("args, fragment", [
    (["build", "--city", "atlantis"], "Unknown city 'atlantis'"),
    (["build", "--city", "/tmp/does-not-exist.osm.pbf"], "does not exist"),
    (["evaluate", "--city", "melbourne", "--controller", "psychic"], "Unknown controller"),
    (["evaluate", "--city", "melbourne", "--controller", "policy"], "needs --run"),
    (["evaluate", "--city", "melbourne", "--controller", "policy", "--run", "/tmp/nope-run"], "does not exist"),
    (["train", "--city", "melbourne", "--algo", "sarsa"], "unknown algo 'sarsa'"),
    (["build", "--city", "cologne8", "--veh-per-hour", "100"], "RESCO scenarios come with their own routes"),
])
def test_bad_input(args, fragment):
    assert_user_error(cli(*args), fragment)


def test_bad_extract(osm_without_signals):
    assert_user_error(cli("build", "--city", str(osm_without_signals)), "no traffic light to control")


def test_gridlocking_demand_is_refused(isolated_build):
    """Same check as `leed-traffic build --veh-per-hour 12000`, on one 20-minute demand file."""
    from dataclasses import replace

    from leed_traffic.cities import resolve_city
    from leed_traffic.errors import ScenarioError
    from leed_traffic.evaluate import check_demand
    from leed_traffic.scenario import build_scenario

    spec = resolve_city("melbourne")
    spec = replace(spec, end=1200, demand=replace(spec.demand, veh_per_hour=12000, seeds=(0,)))
    with pytest.raises(ScenarioError, match="gridlocks melbourne"):
        check_demand(build_scenario(spec))


def test_evaluate_writes_metrics(tmp_path):
    p = cli("evaluate", "--city", "melbourne", "--controller", "fixed", "--controller", "max-pressure",
            "--seconds", "300", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(tmp_path / "metrics.csv")
    assert list(df.controller) == ["fixed", "max-pressure"]
    assert "max-pressure" in p.stdout and "mean delay" in p.stdout


def test_train_ippo_then_evaluate_policy(tmp_path):
    run = tmp_path / "run"
    p = cli("train", "--city", "melbourne", "--algo", "ippo", "--episodes", "2", "--seconds", "120",
            "--eval-episodes", "1", "--reward", "queue", "--out", str(run))  # max green: on by default
    assert p.returncode == 0, p.stderr
    for f in ("config.json", "metrics.csv", "policy.pt", "comparison.csv", "comparison.md"):
        assert (run / f).exists(), f
    import json

    env_cfg = json.loads((run / "config.json").read_text())["env"]["env_config"]
    assert env_cfg["reward"] == "queue" and env_cfg["enforce_max_green"] is True
    from leed_traffic.controllers import get_controller

    # evaluation replays the options the policy was trained under
    opts = get_controller("policy", run=run).env_options
    assert opts["reward"] == "queue" and opts["enforce_max_green"] is True
    comp = pd.read_csv(run / "comparison.csv")
    assert set(comp.controller) == {"fixed", "webster", "actuated", "max-pressure", "greedy", "ippo", "ippo-argmax",
                                    "max-pressure (max green)", "greedy (max green)"}
    # the trained policy plugs into evaluate: in its deployed mode by default, or as asked
    from leed_traffic.rundir import RunDir

    deployed = "ippo" if RunDir(run).deployed_mode() == "sampled" else "ippo-argmax"
    p = cli("evaluate", "--city", "melbourne", "--controller", "policy", "--run", str(run), "--seconds", "120",
            "--out", str(tmp_path / "ev"))
    assert p.returncode == 0, p.stderr
    assert pd.read_csv(tmp_path / "ev" / "metrics.csv").controller.tolist() == [deployed]
    p = cli("evaluate", "--city", "melbourne", "--controller", "policy", "--run", str(run), "--seconds", "120",
            "--sampled", "--out", str(tmp_path / "ev1"))
    assert p.returncode == 0, p.stderr
    assert pd.read_csv(tmp_path / "ev1" / "metrics.csv").controller.tolist() == ["ippo"]
    p = cli("evaluate", "--city", "melbourne", "--controller", "policy", "--run", str(run), "--seconds", "120",
            "--argmax", "--out", str(tmp_path / "ev2"))
    assert p.returncode == 0, p.stderr
    assert pd.read_csv(tmp_path / "ev2" / "metrics.csv").controller.tolist() == ["ippo-argmax"]
    # a run from one city is refused on another
    assert_user_error(cli("evaluate", "--city", "paris", "--controller", "policy", "--run", str(run),
                          "--seconds", "60"), "trained on melbourne")
    assert_user_error(cli("train", "--city", "melbourne", "--algo", "ippo", "--reward", "bogus",
                          "--out", str(tmp_path / "bad")), "Unknown reward 'bogus'")
    # an existing run is not silently overwritten or restarted
    assert_user_error(cli("train", "--city", "melbourne", "--algo", "ippo", "--episodes", "2", "--seconds", "120",
                          "--eval-episodes", "0", "--out", str(run)), "resume")
