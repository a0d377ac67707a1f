"""Checkpoints: atomic, fingerprinted, and refused (never silently restarted) when they do not fit.

A checkpoint is one ``torch.save`` file at ``RunDir.checkpoint_path(update)``, written to a
temporary sibling, fsynced and renamed into place, so a kill -9 leaves either the previous
checkpoint or the new one, never half a file. Its payload (``payload``) holds the policies, the
optimizers, every RNG state, the reward normaliser, the per-worker episode bookkeeping (seed +
actions so far, replayed on resume so the environment is where it was), the run's env spec and
config (so a checkpoint alone can be served as a policy) and a *fingerprint* (``fingerprint``):
city, scenario and network hashes, agent ids, observation and action sizes, the learning-relevant
config and the demonstrations' content hash. Resuming under a different fingerprint raises
``CheckpointMismatch`` naming what differs; an unreadable or incomplete file raises
``CheckpointCorrupt``. Loaded with ``weights_only=True``: the payload is tensors and plain Python
containers only, so loading never executes pickled code.

``policy.pt`` (``policy_payload``) is the final policy: fingerprint, spec, config, weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from leed_traffic.errors import UserError
from leed_traffic.rundir import RunDir

if TYPE_CHECKING:
    from leed_traffic.learn.config import TrainConfig
    from leed_traffic.learn.rollout import EnvSpec

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "fingerprint", "update", "env_steps", "policy", "optimizers", "rng")
KEEP_CHECKPOINTS = 3


class CheckpointError(UserError):
    """A checkpoint cannot be used to resume (the message says why and what to do): a user error,
    reported in one sentence by the CLI."""


class CheckpointCorrupt(CheckpointError):
    pass


class CheckpointMismatch(CheckpointError):
    pass


def demos_hash(demos: Any) -> str:
    """Content hash of a DemoDataset (arrays of every agent, in sorted order); "" for None."""
    if demos is None:
        return ""
    h = hashlib.sha256()
    for agent in sorted(demos.agents):
        d = demos.agents[agent]
        h.update(agent.encode())
        for f in ("obs", "actions", "rewards", "episode", "valid"):
            arr = np.ascontiguousarray(getattr(d, f))
            h.update(f"{f}{arr.dtype}{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()[:16]


def fingerprint_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints (nested config flattened)."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict) and k in ("config",):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    s, c = flat(saved), flat(current)
    diffs = []
    for k in sorted(set(s) | set(c)):
        if s.get(k) != c.get(k):
            sv, cv = _short(s.get(k)), _short(c.get(k))
            diffs.append(f"{k}: checkpoint has {sv}, this run has {cv}")
    return diffs


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def fingerprint(spec: "EnvSpec", config: "TrainConfig", demos: Any, city: str = "") -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the env, the learning config, the demos."""
    return {
        "city": spec.city or city,
        "scenario_hash": spec.scenario_hash,
        "net_hash": spec.net_hash,
        "agents": list(spec.agents),
        "obs_dims": dict(spec.obs_dims),
        "n_actions": dict(spec.n_actions),
        "env_config": dict(spec.env_config),
        "demos_hash": demos_hash(demos),
        "config": config.fingerprint_dict(),
    }


def _legacy_fingerprint(saved: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint of an earlier version in today's terms: RELED was ``reled: true`` on leed, and
    runs from before the imitation gate imitated ungated (their settings are filled in as such), and
    the network hash was not recorded ("" matches any)."""
    cfg = saved.get("config")
    if isinstance(cfg, dict):
        cfg = dict(cfg)
        if "reled" in cfg and cfg.pop("reled"):
            cfg["algo"] = "reled"
        if "expert_gate" not in cfg:
            cfg.update(expert_gate="none", expert_trust="none", bc_pretrain_gate="auto")
        cfg.setdefault("expert_trust_window", 3)  # added with ``measured`` trust; 3 changes nothing under the others
        saved = {**saved, "config": cfg}
    return saved


# ---------------------------------------------------------------------- payloads
def rng_state() -> dict[str, Any]:
    """All learner randomness: python's and torch's (numpy's is never drawn from)."""
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    torch.set_rng_state(state["torch"])


def payload(*, fingerprint: dict[str, Any], spec: "EnvSpec", config: "TrainConfig",
            policy: torch.nn.Module, optimizer: torch.optim.Optimizer, **state: Any) -> dict[str, Any]:
    """A checkpoint's content: the trainer's ``state`` (counters, ``RewardNormalizer`` and
    ``EpisodeBook`` state dicts, ...) plus what every checkpoint holds. Plain containers only."""
    return _plain({
        "format": CHECKPOINT_FORMAT,
        "fingerprint": json.dumps(fingerprint, sort_keys=True),
        "spec": json.dumps(spec.to_dict()),
        "config": json.dumps(config.to_dict()),
        **state,
        "policy": policy.state_dict(),
        "optimizers": [optimizer.state_dict()],
        "rng": rng_state(),
    })


def policy_payload(*, fingerprint: dict[str, Any], spec: "EnvSpec", config: "TrainConfig",
                   policy: torch.nn.Module, update: int, env_steps: int) -> dict[str, Any]:
    """``policy.pt``: the final policy and what it takes to rebuild and serve it."""
    return {"format": CHECKPOINT_FORMAT,
            "fingerprint": json.dumps(fingerprint, sort_keys=True),
            "spec": json.dumps(spec.to_dict()),
            "config": json.dumps(config.to_dict()),
            "policy": policy.state_dict(), "update": update, "env_steps": env_steps}


# ---------------------------------------------------------------------- files
def _torch_writer(state: dict[str, Any]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())

    return write


def save_checkpoint(run: RunDir, update: int, state: dict[str, Any], keep: int = KEEP_CHECKPOINTS) -> Path:
    """Write atomically (tmp + fsync + rename), then prune all but the newest ``keep``."""
    path = run.write_binary(run.checkpoint_path(update), _torch_writer(state))
    run.prune_checkpoints(keep)
    return path


def save_policy(run: RunDir, state: dict[str, Any]) -> Path:
    return run.write_binary(run.policy_path, _torch_writer(state))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The highest-numbered checkpoint of a run directory (None if there is none)."""
    return RunDir(Path(run_dir)).latest_checkpoint()


def load_checkpoint(path: Path, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load and validate; raise CheckpointCorrupt / CheckpointMismatch with the reason."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means corrupt
        raise CheckpointCorrupt(
            f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e}); refusing to "
            "resume from it. Delete it (an older checkpoint, if any, will then be used) or start "
            "a new run directory."
        ) from e
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
        raise CheckpointCorrupt(f"checkpoint {path} is incomplete (missing {missing}); refusing it")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointCorrupt(
            f"checkpoint {path} has format {state['format']}, expected {CHECKPOINT_FORMAT}"
        )
    if fingerprint is not None:
        saved = _legacy_fingerprint(json.loads(state["fingerprint"]))
        if saved.get("net_hash") == "" and "net_hash" in fingerprint:  # not recorded before
            saved["net_hash"] = fingerprint["net_hash"]
        diffs = fingerprint_diff(saved, fingerprint)
        if diffs:
            raise CheckpointMismatch(
                f"checkpoint {path} was trained for a different setup; refusing to resume:\n  "
                + "\n  ".join(diffs)
            )
    return state


def _plain(x: Any) -> Any:
    """numpy scalars -> Python numbers, recursively (weights_only loading accepts no numpy)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_plain(v) for v in x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return torch.as_tensor(x)
    return x


def _to_tuple(x: Any) -> Any:
    """random.setstate needs tuples (a checkpoint round trip may give lists)."""
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
