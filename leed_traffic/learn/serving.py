"""A training run's policies, served: the one ``PolicyController``.

``load_trained(run)`` rebuilds the ``MultiAgentPolicy`` of a run from ``policy.pt`` (written at
the end of training) or else its latest checkpoint, so an interrupted run can be evaluated too.
Both files carry the run's env spec and learner config; checkpoints of earlier versions did not,
and are read with the run's ``config.json``.

``PolicyController`` is both

- a plain controller, ``decide(obs) -> {agent: phase}`` (also ``controller(obs)``), and
- a decision controller of the shared evaluation path (``controllers.Controller``: ``name``,
  ``decides``, ``prepare(scenario, workdir, seed)`` -> the run's env options to replay,
  ``act(env, obs)``), refusing a scenario other than the one it was trained on.

``sample=True`` draws actions from pi with a generator seeded by the episode seed (``reseed``; the
stochastic policy PPO trains, reproducible per seed); ``sample=False`` takes the argmax.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leed_traffic.errors import UserError
from leed_traffic.learn import checkpoint as ckpt
from leed_traffic.learn.config import TrainConfig
from leed_traffic.learn.policy import MultiAgentPolicy, build_policy
from leed_traffic.learn.rollout import EnvSpec
from leed_traffic.rundir import REPLAYED_OPTIONS, RunDir, policy_row


@dataclass
class TrainedPolicy:
    """A run's policy with what it was trained in and for."""

    policy: MultiAgentPolicy
    spec: EnvSpec
    config: TrainConfig
    update: int
    env_steps: int
    source: Path
    """policy.pt or the checkpoint it was read from."""

    @property
    def env_options(self) -> dict[str, Any]:
        """The env options that change what the policy sees or does (replayed wherever it runs)."""
        env = self.spec.env_config
        return {k: env[k] for k in REPLAYED_OPTIONS if env.get(k) is not None}


def _as_run(run: RunDir | str | Path) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir.open(run)


def load_trained(run: RunDir | str | Path) -> TrainedPolicy:
    """The policy of a run (``RunDir.open`` checks config.json and a policy file exist).

    Raises ``UserError`` for a missing/incomplete run, ``CheckpointCorrupt`` for unreadable files.
    """
    run = _as_run(run)
    if run.policy_path.is_file():
        path = run.policy_path
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure to read means corrupt
            raise ckpt.CheckpointCorrupt(f"{path} is corrupt or unreadable ({e})") from e
    else:
        path = run.latest_checkpoint()
        if path is None:
            raise UserError(f"{run.path} holds no trained policy (no policy.pt or checkpoint); "
                            "train or resume the run first.")
        state = ckpt.load_checkpoint(path)
    if "spec" in state and "config" in state:
        spec = EnvSpec.from_dict(json.loads(state["spec"]))
        config = TrainConfig.from_dict(json.loads(state["config"]))
    else:  # a checkpoint of an earlier version: the spec and config are in config.json
        meta = run.config()
        train = (meta.get("experiment") or {}).get("train") or meta.get("config")
        if not meta.get("env") or not train:
            raise UserError(f"{path} and {run.config_path} do not describe the policy's network; "
                            "the run directory is damaged.")
        spec, config = EnvSpec.from_dict(meta["env"]), TrainConfig.from_dict(train)
    policy = build_policy(spec, config)
    policy.load_state_dict(state["policy"])
    return TrainedPolicy(policy, spec, config, int(state["update"]), int(state["env_steps"]), path)


def final_env_steps(run: RunDir | str | Path) -> int | None:
    """Environment steps of the run's final policy (``policy.pt``); None before training ended."""
    path = run.policy_path if isinstance(run, RunDir) else RunDir(Path(run)).policy_path
    if not path.is_file():
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["env_steps"])
    except Exception as e:  # noqa: BLE001
        raise ckpt.CheckpointCorrupt(f"{path} is corrupt or unreadable ({e})") from e


class PolicyController:
    """Trained policies as a controller (see the module docstring)."""

    decides = True

    def __init__(self, policy: MultiAgentPolicy | None, *, sample: bool = True, name: str = "policy",
                 env_options: dict[str, Any] | None = None, scenario_hash: str = "", city: str = "",
                 run_dir: Path | None = None, metadata: dict[str, Any] | None = None):
        self.policy = policy.eval() if policy is not None else None  # None: built later (PretrainedController)
        self.agents = list(policy.agents) if policy is not None else []
        self.sample = sample
        """False: argmax (deterministic). True: draw from pi with a seeded generator (``reseed``)."""
        self.name = name
        self.env_options = dict(env_options or {})
        self.scenario_hash, self.city, self.run_dir = scenario_hash, city, run_dir
        self.metadata = dict(metadata or {})
        self._gen = torch.Generator().manual_seed(0)

    @classmethod
    def from_trained(cls, trained: TrainedPolicy, *, sample: bool = True,
                     run_dir: Path | None = None) -> "PolicyController":
        algo, spec = trained.config.algo, trained.spec
        return cls(trained.policy, sample=sample, name=policy_row(algo, sample),
                   env_options=trained.env_options, scenario_hash=spec.scenario_hash, city=spec.city,
                   run_dir=run_dir,
                   metadata={"city": spec.city, "algo": algo, "update": trained.update,
                             "env_steps": trained.env_steps, "scenario_hash": spec.scenario_hash})

    @classmethod
    def from_run(cls, run: RunDir | str | Path | None, sample: bool | None = None) -> "PolicyController":
        """The policies of a training run; every problem is a one-sentence ``UserError``.

        ``sample=None`` acts in the run's deployed mode (``RunDir.deployed_mode``: the one its
        validation on training seeds chose). Named ``<algo>`` when sampled, ``<algo>-argmax``
        otherwise (both appear in reports: an under-trained policy's argmax can hold one phase for
        good and gridlock the city, a sampled one can jam where its argmax does not).
        """
        if run is None:
            raise UserError("--controller policy needs --run RUN (a training run directory).")
        rd = _as_run(run)
        try:
            trained = load_trained(rd)
        except ckpt.CheckpointError as exc:
            raise UserError(f"Cannot load the policies of {rd.path}: {exc}.") from exc
        if sample is None:
            sample = rd.deployed_mode() == "sampled"
        return cls.from_trained(trained, sample=sample, run_dir=rd.path)

    # ------------------------------------------------------------------ acting
    def reseed(self, seed: int) -> None:
        self._gen.manual_seed(int(seed))

    def decide(self, obs: dict[str, np.ndarray]) -> dict[str, int]:
        """One decision for every agent from its observation vector."""
        missing = [a for a in self.agents if a not in obs]
        if missing:
            raise KeyError(f"observation lacks agents {missing[:5]} (policy trained on another net?)")
        batch = {a: np.asarray(obs[a], dtype=np.float32).reshape(1, -1) for a in self.agents}
        for a in self.agents:
            if batch[a].shape[1] != self.policy.specs[a].obs_dim:
                raise ValueError(
                    f"agent {a}: observation size {batch[a].shape[1]} but the policy was trained "
                    f"on {self.policy.specs[a].obs_dim}"
                )
        if not self.sample:
            actions, _, _ = self.policy.act_batch(batch, deterministic=True)
            return {a: int(actions[a][0]) for a in self.agents}
        with torch.no_grad():
            probs = self.policy.dist(self.policy.pad(batch)).probs  # [agents, 1, n]
        draws = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=self._gen).reshape(-1)
        return {a: int(draws[i]) for i, a in enumerate(self.agents)}

    def __call__(self, obs: dict[str, np.ndarray]) -> dict[str, int]:
        return self.decide(obs)

    # ------------------------------------------------------------------ evaluation protocol
    def prepare(self, scenario: Any, workdir: Path, seed: int) -> dict[str, Any]:
        """Before an episode: refuse another scenario, reseed the sampler, return the env options."""
        if self.scenario_hash and scenario.hash != self.scenario_hash:
            raise UserError(
                f"The policies in {self.run_dir or 'this run'} were trained on "
                f"{self.city or 'another scenario'} (scenario {self.scenario_hash}), not on "
                f"{scenario.city} ({scenario.hash}); evaluate them on the city they were trained on."
            )
        self.reseed(seed)
        return dict(self.env_options)

    def act(self, env: Any, obs: dict[str, np.ndarray]) -> dict[str, int]:
        return self.decide(obs)


class PretrainedController(PolicyController):
    """A pretrained phase policy (``learn.pretrained``) on any network, zero-shot.

    Its weights fit every intersection, so the per-city network is built at the first decision of
    an episode from the observation sizes (n_phases x features per agent) and rebuilt only when the
    agents change; ``prepare`` returns the env options the policy was trained under (observation
    ``phase``, decision interval, max green, ...) and accepts any scenario.
    """

    def __init__(self, name: str = "pretrained", *, sample: bool = True):
        from leed_traffic.learn import pretrained

        f = pretrained.load_file(name)
        self.weights, self.meta, self.source = f["policy"], f["meta"], f["path"]
        env = self.meta.get("env", {})
        super().__init__(None, sample=sample, name=policy_row("pretrained", sample),
                         env_options={k: env[k] for k in REPLAYED_OPTIONS if env.get(k) is not None},
                         metadata={"pretrained": str(self.source), "trained_on": self.meta.get("cities", [])})

    def _build(self, obs: dict[str, np.ndarray]) -> None:
        from leed_traffic.learn.policy import AgentSpec, PhasePolicy
        from leed_traffic.observations import PHASE_FEATURES

        specs = []
        for a, o in obs.items():
            n = int(np.asarray(o).size)
            if n % PHASE_FEATURES:
                raise UserError(f"agent {a}'s observation has {n} values, not {PHASE_FEATURES} per phase: "
                                "the pretrained policy needs env.observation=phase.")
            specs.append(AgentSpec(a, n, n // PHASE_FEATURES))
        policy = PhasePolicy(specs, tuple(self.meta["hidden_sizes"]))
        policy.load_transferable(self.weights)  # a MAPPO file too: serving needs only the actor
        self.policy = policy.eval()
        self.agents = list(policy.agents)

    def prepare(self, scenario: Any, workdir: Path, seed: int) -> dict[str, Any]:
        self.reseed(seed)
        return dict(self.env_options)

    def decide(self, obs: dict[str, np.ndarray]) -> dict[str, int]:
        if self.policy is None or set(obs) != set(self.agents):
            self._build(obs)
        return super().decide(obs)


def load_policies(run_dir: RunDir | str | Path, sample: bool = False) -> PolicyController:
    """The trained policies of a run as a controller; deterministic (argmax) unless ``sample``."""
    rd = _as_run(run_dir)
    return PolicyController.from_trained(load_trained(rd), sample=sample, run_dir=rd.path)
