"""ExperimentConfig (TOML, --set, defaults defined once) and the pipeline's honest config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from leed_traffic.config import PHASE_LABEL_SMOOTHING, PHASE_LEARNING_RATE, ExperimentConfig
from leed_traffic.env import EnvConfig
from leed_traffic.errors import UserError
from leed_traffic.learn.config import TrainConfig


def test_defaults_come_from_the_owning_dataclasses():
    cfg = ExperimentConfig()
    assert cfg.train == TrainConfig(policy="phase", learning_rate=PHASE_LEARNING_RATE,
                                    expert_label_smoothing=PHASE_LABEL_SMOOTHING)
    assert (TrainConfig().learning_rate, TrainConfig().expert_label_smoothing) == (3e-4, 0.0)
    assert cfg.env.reward == EnvConfig().reward and cfg.env.min_green == EnvConfig().min_green
    assert cfg.env.max_green == EnvConfig().max_green and cfg.env.delta_time == EnvConfig().delta_time
    # the deliberate differences: experiments enforce max green, the library env (sumo-rl's rule)
    # does not; they train the shared phase policy on its observation, the components default to
    # sumo-rl's observation and per-agent MLPs (what runs before it used)
    assert cfg.env.enforce_max_green is True and EnvConfig().enforce_max_green is False
    assert (cfg.env.observation, cfg.train.policy) == ("phase", "phase")
    assert (EnvConfig().observation, TrainConfig().policy) == ("default", "mlp")
    cfg.validate()
    # a run's config.json from before the phase policy repeats with per-agent MLPs
    old = {"experiment": {"env": {"observation": "default"}, "train": {"algo": "ippo"}}}
    assert ExperimentConfig.from_dict(old).validate().train.policy == "mlp"
    # ... and one from before label smoothing (its config.json has every other field) without it
    recorded = ExperimentConfig().to_dict()
    del recorded["train"]["expert_label_smoothing"]
    again = ExperimentConfig.from_dict({"experiment": recorded}).validate().train
    assert again.expert_label_smoothing == 0.0 and again.learning_rate == PHASE_LEARNING_RATE


def test_toml_then_set_overrides(tmp_path):
    f = tmp_path / "exp.toml"
    f.write_text('[scenario]\ncity = "cologne8"\n[env]\nreward = "queue"\nseconds = 600\n'
                 '[train]\nalgo = "ippo"\nent_coef = 0.02\nhidden_sizes = [32, 32]\n[eval]\nepisodes = 5\n')
    cfg = ExperimentConfig.load(f)
    assert cfg.scenario.city == "cologne8" and cfg.env.reward == "queue" and cfg.env.seconds == 600
    assert cfg.train.algo == "ippo" and cfg.train.ent_coef == 0.02 and cfg.train.hidden_sizes == (32, 32)
    cfg.apply(["train.ent_coef=0.05", "env.enforce_max_green=false", "env.seconds=none",
               "eval.controllers=fixed,actuated", "train.hidden_sizes=16,16", "train.share_parameters=true"])
    assert cfg.train.ent_coef == 0.05 and cfg.env.enforce_max_green is False and cfg.env.seconds is None
    assert cfg.eval.controllers == ("fixed", "actuated") and cfg.train.hidden_sizes == (16, 16)
    assert cfg.train.share_parameters is True
    # a dict round trip is the identity (config.json -> --config)
    assert ExperimentConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("setting, fragment", [
    ("train.nope=1", "has no setting 'nope'"),
    ("bogus.x=1", "is not SECTION.FIELD"),
    ("train.ent_coef=lots", "not a valid float"),
    ("train.update_epochs=2.5", "not a valid int"),
    ("env.enforce_max_green=maybe", "not a valid bool"),
    ("train.algo=sarsa", "unknown algo 'sarsa'"),
    ("env.reward=bogus", "Unknown reward 'bogus'"),
    ("train.ent_coef", "SECTION.FIELD=VALUE"),
])
def test_bad_settings_are_one_sentence(setting, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(")):
        ExperimentConfig().apply([setting])


def test_bad_config_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ExperimentConfig.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nalgo = 'ippo'")
    with pytest.raises(UserError, match="not valid TOML"):
        ExperimentConfig.load(bad)
    extra = tmp_path / "extra.toml"
    extra.write_text("[learning]\nrate = 1\n")
    with pytest.raises(UserError, match="Unknown section"):
        ExperimentConfig.load(extra)


def test_config_json_records_what_ran(tmp_path):
    """The held-out seeds and the step budget in config.json are the ones the run used."""
    from leed_traffic.pipeline import final_env_steps, run_experiment

    cfg = ExperimentConfig()
    cfg.apply(["scenario.city=melbourne", "env.seconds=120", "train.algo=ippo", "train.episodes=1",
               "train.progress=false", "eval.episodes=2", "eval.controllers=fixed", "eval.report=false"])
    res = run_experiment(cfg, tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    ran = pd.read_csv(tmp_path / "run" / "evaluation" / "metrics.csv")
    assert sorted(set(ran["seed"])) == sorted(meta["experiment"]["eval"]["seeds"])
    assert len(meta["experiment"]["eval"]["seeds"]) == meta["experiment"]["eval"]["episodes"] == 2
    # max-green rows are added only for env-deciding classical controllers that were asked for
    assert set(ran["controller"]) == {"fixed", "ippo", "ippo-argmax"}
    assert meta["experiment"]["train"]["total_env_steps"] == final_env_steps(res.run) == 120 // 5
    assert meta["env"]["env_config"]["seconds"] == 120 and meta["env"]["env_config"]["enforce_max_green"] is True
    assert meta["fingerprint"]["net_hash"], "the fingerprint names the network"
    # repeating the run from its config.json is a no-op that finds the finished run
    again = ExperimentConfig.load(tmp_path / "run" / "config.json")
    assert again.to_dict() == meta["experiment"]
    # the deployed mode was chosen on training seeds, never on the held-out ones, by the lower delay
    val = pd.read_csv(tmp_path / "run" / "evaluation" / "validation.csv")
    assert set(val["controller"]) == {"ippo", "ippo-argmax"} and len(val) == 4
    assert not set(val["seed"]) & set(ran["seed"])
    delay = val.groupby("controller")["mean_delay"].mean()
    want = "argmax" if delay["ippo-argmax"] < delay["ippo"] else "sampled"
    assert res.deployed_mode == res.run.deployed_mode() == want
    from leed_traffic.controllers import get_controller
    assert get_controller("policy", run=tmp_path / "run").sample == (want == "sampled")
    stamp = (tmp_path / "run" / "evaluation" / "validation.csv").stat().st_mtime_ns
    res2 = run_experiment(again, tmp_path / "run", progress=False)
    assert res2.trained == "finished"
    pd.testing.assert_frame_equal(res2.evaluation, ran)
    assert (tmp_path / "run" / "evaluation" / "validation.csv").stat().st_mtime_ns == stamp, "validation redone"


def test_deployed_mode_is_read_from_the_run(tmp_path):
    """No deploy.json: the sampled policy as trained; a damaged one: one sentence."""
    from leed_traffic.rundir import DEPLOY, RunDir

    run = RunDir(tmp_path)
    assert run.deployed_mode() == "sampled"
    run.write_json(DEPLOY, {"mode": "argmax"})
    assert run.deployed_mode() == "argmax"
    run.write_json(DEPLOY, {"mode": "greedy"})
    with pytest.raises(UserError, match="not one of sampled, argmax"):
        run.deployed_mode()
