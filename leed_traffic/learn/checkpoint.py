"""Checkpoints: atomic, fingerprinted, and refused (never silently restarted) when they do not fit.

A checkpoint is one ``torch.save`` file written to a temporary sibling and renamed into place, so a
kill -9 leaves either the previous checkpoint or the new one, never half a file. It holds the
policies, the optimizers, every RNG state, the reward normaliser, the per-worker episode
bookkeeping (seed + actions so far, replayed on resume so the environment is where it was) and a
*fingerprint*: city, scenario and network hashes, agent ids, observation and action sizes, the
learning-relevant config and the demonstrations' content hash. Resuming under a different
fingerprint raises ``CheckpointMismatch`` naming what differs; an unreadable or incomplete file
raises ``CheckpointCorrupt``. Loaded with ``weights_only=True``: the payload is tensors and plain
Python containers only, so loading never executes pickled code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "fingerprint", "update", "env_steps", "policy", "optimizers", "rng")
_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used to resume (the message says why)."""


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


def checkpoint_path(run_dir: Path, update: int) -> Path:
    return run_dir / "checkpoints" / f"ckpt_{update:08d}.pt"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The highest-numbered checkpoint in ``run_dir/checkpoints`` (None if there is none)."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return None
    found = sorted(p for p in d.iterdir() if _NAME.match(p.name))
    return found[-1] if found else None


def save_checkpoint(state: dict[str, Any], path: Path, keep: int = 3) -> Path:
    """Write atomically (tmp + fsync + rename), then prune all but the newest ``keep``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    old = sorted(p for p in path.parent.iterdir() if _NAME.match(p.name))
    for p in old[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)
    return path


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
        saved = json.loads(state["fingerprint"])
        diffs = fingerprint_diff(saved, fingerprint)
        if diffs:
            raise CheckpointMismatch(
                f"checkpoint {path} was trained for a different setup; refusing to resume:\n  "
                + "\n  ".join(diffs)
            )
    return state
