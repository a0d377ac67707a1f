"""A training run's policies as a controller for the shared evaluation path.

The run's environment options (decision interval, yellow, min green, observation, reward) are
replayed so the policy sees exactly the observations it was trained on; a run from another
network is refused with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leed_traffic.errors import UserError

# env options that change what a policy observes or how its actions act
REPLAYED_OPTIONS = ("delta_time", "yellow_time", "all_red_time", "min_green", "max_green",
                    "enforce_max_green", "observation", "reward")


@dataclass
class PolicyController:
    name: str
    run_dir: Path
    env_options: dict[str, Any]
    scenario_hash: str
    city: str
    decides: bool = True
    sample: bool = True
    """Draw actions from the policy, seeded by the episode seed (the stochastic policy PPO trains:
    the default), or take its argmax (``-argmax`` rows). An under-trained policy's argmax can hold
    one phase for good and gridlock the city, so reports show both."""
    _policy: Any = field(default=None, repr=False)

    @classmethod
    def from_run(cls, run: str | Path | None, sample: bool = True) -> "PolicyController":
        if run is None:
            raise UserError("--controller policy needs --run RUN (a training run directory).")
        run_dir = Path(run)
        if not run_dir.is_dir():
            raise UserError(f"Run directory {run_dir} does not exist; pass the directory `leed-traffic train` wrote.")
        if not (run_dir / "config.json").exists():
            raise UserError(f"{run_dir} is not a training run (no config.json); pass the directory `leed-traffic train` wrote.")
        from leed_traffic.learn import load_policies
        from leed_traffic.learn.checkpoint import CheckpointError

        try:
            policy = load_policies(run_dir)
        except (CheckpointError, FileNotFoundError) as exc:
            raise UserError(f"Cannot load the policies of {run_dir}: {exc}.") from exc
        meta = json.loads((run_dir / "config.json").read_text())
        env = meta.get("env", {})
        env_cfg = env.get("env_config", {})
        opts = {k: env_cfg[k] for k in REPLAYED_OPTIONS if k in env_cfg and env_cfg[k] is not None}
        algo = meta.get("config", {}).get("algo", "policy")
        policy.sample = sample
        return cls(name=algo if sample else f"{algo}-argmax", run_dir=run_dir, env_options=opts,
                   scenario_hash=env.get("scenario_hash", ""), city=env.get("city", ""), sample=sample,
                   _policy=policy)

    def prepare(self, scenario, workdir: Path, seed: int) -> dict:
        if self.scenario_hash and scenario.hash != self.scenario_hash:
            raise UserError(
                f"The policies in {self.run_dir} were trained on {self.city or 'another scenario'} "
                f"(scenario {self.scenario_hash}), not on {scenario.city} ({scenario.hash}); "
                "evaluate them on the city they were trained on."
            )
        self._policy.reseed(seed)
        return dict(self.env_options)

    def act(self, env, obs) -> dict[str, int]:
        return self._policy.act(obs)
