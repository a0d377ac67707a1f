"""Whole-episode rollout workers (learn/workers.py): every backend plays the same episodes for the
same seeds, a killed worker is replaced (same result) or stops the run in one sentence, resume
stays exact, and Ray is optional (one sentence without it, never a hang on a bad address)."""

from __future__ import annotations

import csv
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from test_learn_fakes import FakeFactory, FakeTrafficEnv, expert_demos

from leed_traffic.errors import UserError
from leed_traffic.learn import EnvFactory, TrainConfig, workers
from leed_traffic.learn import train as train_run
from leed_traffic.learn.episodes import EpisodeBook
from leed_traffic.learn.workers import WorkerLost, make_backend
from leed_traffic.rundir import RunDir

FAST = dict(progress=False, ent_coef=0.0, learning_rate=1e-2, checkpoint_interval=1000)
TIMING = {"wall_time", "steps_per_s", "sim_s_per_wall_s", "collect_s", "optimize_s"}


def run_and_read(cfg: TrainConfig, path: Path, factory, demos=None) -> dict:
    """Train; the run's logs without timing columns, and its final weights."""
    train_run(cfg, RunDir(path), factory, demos)

    def rows(name: str) -> list[dict]:
        with (path / name).open() as f:
            return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]

    return {"updates": rows("updates.csv"), "metrics": rows("metrics.csv"),
            "policy": torch.load(path / "policy.pt", weights_only=True)["policy"]}


def same_run(a: dict, b: dict) -> bool:
    return (a["updates"] == b["updates"] and a["metrics"] == b["metrics"]
            and all(torch.equal(a["policy"][k], b["policy"][k]) for k in a["policy"]))


@pytest.fixture(scope="module")
def local_ray():
    """A new local Ray for this module (never a cluster `ray start` left on this machine; workers see
    the tests folder, as spawned processes do)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        here = str(Path(__file__).resolve().parent)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([here, *sys.path])}})
    yield ray
    ray.shutdown()


@dataclass(frozen=True)
class DyingFactory:
    """A fake env whose process SIGKILLs itself at step ``at`` of an episode, ``times`` times in
    all (counted in marker files, as the process that counts is the one that dies)."""

    marker_dir: str
    at: int = 7
    times: int = 1
    episode_steps: int = 20

    def __call__(self) -> "DyingEnv":
        return DyingEnv(self)


class DyingEnv(FakeTrafficEnv):
    def __init__(self, recipe: DyingFactory):
        super().__init__(recipe.episode_steps)
        self.recipe = recipe

    def step(self, actions):
        out = super().step(actions)
        deaths = len(os.listdir(self.recipe.marker_dir))
        if self.t == self.recipe.at and deaths < self.recipe.times:
            try:  # exclusive: of two workers at the same step only one takes this death
                os.close(os.open(Path(self.recipe.marker_dir, f"death{deaths}"), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return out
            os.kill(os.getpid(), signal.SIGKILL)
        return out


# ---------------------------------------------------------------------- identical episodes
def test_backends_give_identical_runs(tmp_path: Path, local_ray) -> None:
    """Same seed: inprocess, process and ray give the same episodes, losses and final weights."""
    demos = expert_demos()
    cfg = dict(algo="leed", total_env_steps=20 * 2 * 3, n_workers=2, **FAST)
    runs = {b: run_and_read(TrainConfig(backend=b, **cfg), tmp_path / b, FakeFactory(), demos)
            for b in ("inprocess", "process", "ray")}
    assert len(runs["inprocess"]["updates"]) == 3 and len(runs["inprocess"]["metrics"]) == 6
    assert {r["worker"] for r in runs["inprocess"]["metrics"]} == {"0", "1"}
    assert same_run(runs["inprocess"], runs["process"])
    assert same_run(runs["inprocess"], runs["ray"])
    # and another seed differs (so the checks above can fail)
    other = run_and_read(TrainConfig(backend="inprocess", **{**cfg, "seed": 1}), tmp_path / "s1", FakeFactory(), demos)
    assert not same_run(runs["inprocess"], other)


def test_sampling_does_not_touch_the_learners_rng() -> None:
    """Episodes are sampled from their own seeded stream: the learner's torch RNG is untouched."""
    backend = make_backend(FakeFactory(), TrainConfig(algo="ippo", progress=False))
    book = EpisodeBook(backend.spec().agents, 2, seed=0)
    book.start()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = backend.run(_weights(backend), book.tasks())
    assert torch.equal(torch.get_rng_state(), before)
    again = backend.run(_weights(backend), book.tasks())
    assert [np.array_equal(a.actions, b.actions) for a, b in zip(first, again)] == [True, True]
    assert not np.array_equal(first[0].actions, first[1].actions)  # workers' episodes differ
    backend.close()


def _weights(backend) -> dict:
    return backend.runner.policy.state_dict()


def test_real_sumo_episodes_match_across_backends(local_ray) -> None:
    """cologne1 (one light, 5 minutes, 10 s decisions): the same two episodes from this process,
    local processes and Ray."""
    factory = EnvFactory("cologne1", {"seconds": 300})
    cfg = TrainConfig(algo="ippo", n_workers=2, progress=False)
    book = EpisodeBook([], 2, seed=0)
    book.start()
    tasks = book.tasks()
    out = {}
    for b in ("inprocess", "process", "ray"):
        backend = make_backend(factory, TrainConfig(**{**cfg.to_dict(), "backend": b}))
        try:
            if b == "inprocess":
                weights = backend.runner.policy.state_dict()
            out[b] = backend.run(weights, tasks)
        finally:
            backend.close()
    ref = out["inprocess"]
    assert ref[0].steps == 30 and ref[0].truncated and ref[0].bootstrap is not None
    for b in ("process", "ray"):
        for x, y in zip(ref, out[b]):
            for f in ("obs", "actions", "logprobs", "values", "raw_rewards", "bootstrap"):
                assert np.array_equal(getattr(x, f), getattr(y, f)), (b, f)
            assert (x.delay, x.sim_time) == (y.delay, y.sim_time)


def test_demonstration_rounds_match_across_backends(tmp_path: Path, local_ray) -> None:
    """Issue 13 item 3: a round's episodes (two demand seeds, each its own refinement chain) played
    in this process, in local processes and on Ray give the same trajectories; and the first seed's
    chain is exactly what a one-episode-per-round run records."""
    from leed_traffic.demos import generate_demos

    common = dict(llm="max-pressure", rounds=2, seconds=300, progress=False)
    runs = {b: generate_demos("cologne1", out=tmp_path / b, episodes=2, workers=2, backend=b, **common)
            for b in ("inprocess", "process", "ray")}
    single = generate_demos("cologne1", out=tmp_path / "single", **common)

    def arrays(run: Path, j: int) -> dict:
        with np.load(run.parent / "rounds" / f"round_{j}.npz") as z:
            return {k: z[k] for k in z.files}

    def same(x: dict, y: dict) -> bool:
        return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)

    for b in ("process", "ray"):
        assert all(same(arrays(runs["inprocess"], j), arrays(runs[b], j)) for j in range(4)), b
    # entries j = round * episodes + episode: the seed-0 chain is entries 0 and 2
    assert same(arrays(single, 0), arrays(runs["inprocess"], 0)) and same(arrays(single, 1), arrays(runs["inprocess"], 2))
    assert not same(arrays(runs["inprocess"], 0), arrays(runs["inprocess"], 1))  # another seed, other traffic
    meta = __import__("json").loads((runs["ray"] / "demos.json").read_text())
    assert len(meta["per_round"]) == 4 and meta["quality"]["city"]["delay"] > 0
    assert (runs["ray"].parent / "fixed_time_s1.json").exists()


# ---------------------------------------------------------------------- resume and failures
def test_whole_episode_resume_is_exact(tmp_path: Path) -> None:
    """Checkpoints between whole episodes: an interrupted run resumes to the same weights and logs."""
    demos = expert_demos()
    cfg = TrainConfig(algo="reled", total_env_steps=20 * 2 * 4, n_workers=2, backend="inprocess",
                      progress=False, checkpoint_interval=1)
    full = run_and_read(cfg, tmp_path / "full", FakeFactory(), demos)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):  # during update 3 (episodes 5-6), after checkpoint 2
        train_run(cfg, RunDir(part), FakeFactory(crash_after=20 * 4 + 25), demos)
    assert RunDir(part).latest_checkpoint().name == "ckpt_00000002.pt"
    train_run(cfg, RunDir(part), FakeFactory(), demos, resume=True)
    resumed = {"updates": [], "metrics": []}
    for name in ("updates", "metrics"):
        with (part / f"{name}.csv").open() as f:
            resumed[name] = [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]
    resumed["policy"] = torch.load(part / "policy.pt", weights_only=True)["policy"]
    assert same_run(full, resumed)


def test_killed_process_worker_is_replaced_with_the_same_result(tmp_path: Path) -> None:
    cfg = TrainConfig(algo="ippo", total_env_steps=20 * 2 * 2, n_workers=2, backend="process", **FAST)
    ref = run_and_read(TrainConfig(**{**cfg.to_dict(), "backend": "inprocess"}), tmp_path / "ref", FakeFactory())
    (tmp_path / "m").mkdir()
    killed = run_and_read(cfg, tmp_path / "killed", DyingFactory(str(tmp_path / "m")))
    assert len(os.listdir(tmp_path / "m")) == 1  # it did die once
    assert same_run(ref, killed)


def test_a_worker_that_keeps_dying_stops_the_run_in_one_sentence(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "m").mkdir()
    monkeypatch.setattr(workers, "MAX_RESTARTS", 1)
    cfg = TrainConfig(algo="ippo", total_env_steps=40, n_workers=1, backend="process", **FAST)
    with pytest.raises(WorkerLost, match=r"died \(exit code -9\) .* 2 times in a row; stopping"):
        train_run(cfg, RunDir(tmp_path / "r"), DyingFactory(str(tmp_path / "m"), times=99))


def test_killed_ray_worker_is_replaced(tmp_path: Path, local_ray) -> None:
    (tmp_path / "m").mkdir()
    backend = make_backend(DyingFactory(str(tmp_path / "m")), TrainConfig(algo="ippo", n_workers=2, backend="ray"))
    try:
        book = EpisodeBook(backend.spec().agents, 2, seed=0)
        book.start()
        ref = make_backend(FakeFactory(), TrainConfig(algo="ippo", backend="inprocess"))
        expected = ref.run(ref.runner.policy.state_dict(), book.tasks())
        got = backend.run(ref.runner.policy.state_dict(), book.tasks())
        ref.close()
    finally:
        backend.close()
    assert len(os.listdir(tmp_path / "m")) == 1
    assert all(np.array_equal(a.actions, b.actions) and np.array_equal(a.obs, b.obs) for a, b in zip(expected, got))


# ---------------------------------------------------------------------- Ray is optional
def test_backend_ray_without_ray_is_one_sentence(monkeypatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leed_traffic.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(UserError, match=r"needs Ray, which is not installed: pip install -e '\.\[ray\]'"):
        workers.check_backend("ray")
    result = CliRunner().invoke(app, ["train", "--city", "cologne1", "--backend", "ray", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "pip install -e '.[ray]'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()
    with pytest.raises(UserError, match="unknown rollout backend 'threads'"):
        workers.check_backend("threads")


def test_unreachable_ray_address_is_one_sentence_not_a_hang(monkeypatch) -> None:
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    import time

    t0 = time.time()
    with pytest.raises(UserError, match="cannot reach a Ray cluster at '127.0.0.1:9'"):
        workers.connect_ray("127.0.0.1:9", 2)
    assert time.time() - t0 < 15
