"""The pretrained policy: one ``PhasePolicy``'s weights, usable at once on any city (issue 10).

A pretrained-policy file (``torch.save`` of plain tensors and JSON strings, read with
``weights_only=True``) holds the phase policy's weights, the architecture they fit (features per
phase, hidden sizes), the env options it was trained under (observation ``phase``, decision
interval, min/max green, ...: replayed wherever it runs, since a 5 s policy is not a 10 s one),
and its provenance (cities, seeds, command, per-city results). The file shipped with the package
is ``leed_traffic/pretrained/phase_policy.pt``, described by ``leed_traffic/pretrained/DATA_CARD.md``
and made by ``benchmarks/pretrain.py``.

``init_policy`` (``train --init``) names one: ``pretrained`` or a path; a run's ``policy.pt`` of a
phase policy works too (its weights fit any network).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from leed_traffic.errors import UserError
from leed_traffic.fileio import atomic_write

FORMAT = "leed-traffic-pretrained/1"
SHIPPED = "pretrained"
"""The name ``init_policy`` and ``--controller`` use for the shipped file."""


def shipped_path() -> Path:
    return Path(str(resources.files("leed_traffic") / "pretrained" / "phase_policy.pt"))


def resolve(name: str) -> Path:
    """``pretrained`` -> the shipped file; anything else is a path (a run directory means its policy.pt)."""
    path = shipped_path() if name == SHIPPED else Path(name)
    if path.is_dir():
        path = path / "policy.pt"
    if not path.is_file():
        if name == SHIPPED:
            raise UserError(f"The pretrained policy is missing from this installation ({path}); "
                            "reinstall leed-traffic or make one with benchmarks/pretrain.py.")
        raise UserError(f"No pretrained policy at {path}; give a file made by benchmarks/pretrain.py, "
                        "a phase-policy run's policy.pt, or 'pretrained'.")
    return path


def load_file(name: str) -> dict[str, Any]:
    """The file's weights (``policy``) and metadata (``meta``: hidden_sizes, features, env options,
    provenance). A run's policy.pt is read as one too, when its policy is a phase policy."""
    path = resolve(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means corrupt
        raise UserError(f"{path} is corrupt or not a pretrained policy ({e}); rebuild it.") from e
    if state.get("format") == FORMAT:
        return {"policy": state["policy"], "meta": json.loads(state["meta"]), "path": path}
    if "config" in state and "spec" in state:  # a training run's policy.pt
        config, spec = json.loads(state["config"]), json.loads(state["spec"])
        if config.get("policy") != "phase":
            raise UserError(f"{path} holds per-intersection policies (train.policy={config.get('policy', 'mlp')}), "
                            "which fit only their own network; only a phase policy can start another run.")
        env = spec.get("env_config", {})
        return {"policy": state["policy"], "path": path,
                "meta": {"hidden_sizes": config["hidden_sizes"], "env": env, "source": str(path)}}
    raise UserError(f"{path} is not a pretrained policy (no {FORMAT} header).")


def load_weights(name: str, hidden_sizes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Weights for a ``PhasePolicy`` with ``hidden_sizes``; one sentence if they do not fit."""
    f = load_file(name)
    want = tuple(int(h) for h in f["meta"]["hidden_sizes"])
    if want != tuple(hidden_sizes):
        raise UserError(f"{f['path']} was trained with hidden sizes {list(want)}, this run has "
                        f"{list(hidden_sizes)}; set train.hidden_sizes={','.join(map(str, want))}.")
    return f["policy"]


def save_pretrained(weights: dict[str, torch.Tensor], path: Path, meta: dict[str, Any]) -> Path:
    """Write a pretrained-policy file atomically: a ``PhasePolicy``'s ``state_dict`` and ``meta``
    (which must say hidden_sizes and env)."""
    from leed_traffic.observations import PHASE_FEATURES

    meta = {"features": PHASE_FEATURES, **meta}
    state = {"format": FORMAT, "policy": {k: v.detach().clone() for k, v in weights.items()},
             "meta": json.dumps(meta, sort_keys=True)}
    return atomic_write(Path(path), lambda tmp: torch.save(state, tmp))
