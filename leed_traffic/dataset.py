"""Expert-demonstration datasets: written by the demonstration generator, read by the learner.

On disk a dataset is a directory with ``demos.npz`` (arrays, keyed ``<agent>/<field>``) and
``demos.json`` (metadata: city, scenario hash, demonstrator, model, rounds, per-round validity
and return, format version). Arrays per agent, one row per decision step, in time order:

- ``obs`` float32 [T, obs_dim]: the agent's observation (the env's observation function)
- ``actions`` int64 [T]: the demonstrated green-phase index
- ``rewards`` float32 [T]: reward received after the action
- ``episode`` int64 [T]: which kept trajectory the row belongs to (DTW compares per trajectory)
- ``valid`` bool [T]: the demonstrator's answer was legal (an illegal one held the phase)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leed_traffic.errors import DemonstrationError
from leed_traffic.fileio import atomic_dir

FORMAT_VERSION = 1
FIELDS = ("obs", "actions", "rewards", "episode", "valid")


@dataclass
class AgentDemos:
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    episode: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def trajectories(self) -> list["AgentDemos"]:
        """Split rows into one AgentDemos per kept trajectory (by ``episode``)."""
        out = []
        for ep in np.unique(self.episode):
            m = self.episode == ep
            out.append(AgentDemos(*(getattr(self, f)[m] for f in FIELDS)))
        return out


@dataclass
class DemoDataset:
    agents: dict[str, AgentDemos]
    metadata: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | Path) -> Path:
        """Write atomically: build in a temporary sibling directory, then rename (replacing an
        existing dataset there)."""
        directory = Path(directory)
        with atomic_dir(directory, exists="replace") as tmp:
            arrays = {
                f"{agent}/{f}": getattr(d, f) for agent, d in self.agents.items() for f in FIELDS
            }
            np.savez_compressed(tmp / "demos.npz", **arrays)
            meta = {"format_version": FORMAT_VERSION, **self.metadata, "agents": sorted(self.agents)}
            (tmp / "demos.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "DemoDataset":
        directory = Path(directory)
        meta_path, npz_path = directory / "demos.json", directory / "demos.npz"
        if not meta_path.exists() or not npz_path.exists():
            raise DemonstrationError(
                f"{directory} is not a demonstration dataset (needs demos.json and demos.npz); "
                "generate one with `leed-traffic demos`."
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise DemonstrationError(
                f"{directory}: dataset format {meta.get('format_version')} is not {FORMAT_VERSION}; "
                "regenerate it with `leed-traffic demos`."
            )
        with np.load(npz_path) as z:
            agents = {
                a: AgentDemos(*(z[f"{a}/{f}"] for f in FIELDS)) for a in meta.get("agents", [])
            }
        return cls(agents=agents, metadata=meta)
