"""Observation functions: swappable callables ``(signal, env) -> np.ndarray`` with a ``space``.

The default reproduces sumo-rl's (a test checks the values are equal): green-phase one-hot,
a min-green flag, per incoming lane density and queue, each scaled by the lane's capacity
``length / (minGap + mean vehicle length)`` and capped at 1. Lane data come from the env's lane
table (``env.LaneTable``), refreshed once per decision step: on libsumo with direct getters, only
for the lanes that hold a vehicle; over TraCI (``use_gui``) with one subscription read.

``backlog`` and ``pressure-backlog`` add what the lanes of the default cannot see (issue 12): the
vehicles waiting to enter the network on each incoming edge or upstream of it (SUMO's insertion
backlog, ``env.InsertionBacklog``) and the outgoing lanes' occupancy and halting (spillback from
the links downstream, which blocks the agent's own movements).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np
from gymnasium import spaces

if TYPE_CHECKING:
    from leed_traffic.env import LeedTrafficEnv
    from leed_traffic.signal import TrafficSignal


class ObservationFunction(Protocol):
    def space(self, ts: "TrafficSignal") -> spaces.Box: ...

    def __call__(self, ts: "TrafficSignal", env: "LeedTrafficEnv") -> np.ndarray: ...


def _phase_head(out: np.ndarray, ts: "TrafficSignal", env: "LeedTrafficEnv") -> None:
    """Green-phase one-hot and min-green flag into ``out[:num_green_phases + 1]`` (zeroed already)."""
    out[ts.green_phase] = 1.0
    out[ts.num_green_phases] = 0.0 if ts.time_since_change(env.sim_time) < ts.min_green + ts.yellow_time else 1.0


class DefaultObservation:
    """sumo-rl's default: [phase one-hot, min-green flag, lane densities, lane queues]."""

    def space(self, ts: "TrafficSignal") -> spaces.Box:
        n = ts.num_green_phases + 1 + 2 * len(ts.in_idx)
        return spaces.Box(low=np.zeros(n, dtype=np.float32), high=np.ones(n, dtype=np.float32))

    def __call__(self, ts: "TrafficSignal", env: "LeedTrafficEnv") -> np.ndarray:
        out = np.zeros(ts.num_green_phases + 1 + 2 * len(ts.in_idx), dtype=np.float32)
        _phase_head(out, ts, env)
        k = ts.num_green_phases + 1
        n = len(ts.in_idx)
        out[k : k + n] = env.lanes.density[ts.in_idx]
        out[k + n :] = env.lanes.queue[ts.in_idx]
        return out


class PressureObservation(DefaultObservation):
    """Default observation plus the per-phase pressure (scaled by 1/20), useful for max-pressure-like policies."""

    def space(self, ts: "TrafficSignal") -> spaces.Box:
        n = ts.num_green_phases + 1 + 2 * len(ts.in_idx) + ts.num_green_phases
        return spaces.Box(low=-np.ones(n, dtype=np.float32) * np.inf, high=np.ones(n, dtype=np.float32) * np.inf)

    def __call__(self, ts: "TrafficSignal", env: "LeedTrafficEnv") -> np.ndarray:
        base = super().__call__(ts, env)
        return np.concatenate([base, env.phase_pressures(ts).astype(np.float32) / 20.0])


BACKLOG_SCALE = 10.0
"""Waiting-to-insert vehicles per observation unit."""
BACKLOG_CLIP = 5.0
"""The scaled backlog is capped here (50 vehicles): beyond that an approach is hopelessly jammed
either way, and the cap keeps one entry from dwarfing the lane features in [0, 1]."""


class _BacklogFeatures:
    """Per decision, one float32 vector shared by every agent: [density of each lane in the env's
    lane table, queue of each lane, scaled backlog of each slot]. An agent's features are then a
    single fancy index into it (indices built once per agent), which keeps ``backlog`` about as
    cheap per agent as the default. Rebuilt when the lane table has been refreshed."""

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self.vec = np.zeros(0, dtype=np.float32)
        self._idx: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def vector(self, env: "LeedTrafficEnv") -> np.ndarray:
        key = (id(env.lanes), env.lanes.version)
        if key != self._key:
            lanes = env.lanes
            self.vec = np.concatenate([
                lanes.density, lanes.queue, np.minimum(env.backlog() / BACKLOG_SCALE, BACKLOG_CLIP),
            ]).astype(np.float32)
            self._key = key
        return self.vec

    def index(self, ts: "TrafficSignal", env: "LeedTrafficEnv") -> tuple[np.ndarray, np.ndarray]:
        """(default part: in-lane density then queue; extras: backlog per in edge, out-lane density, queue)."""
        idx = self._idx.get(ts.id)
        if idx is None:
            n = len(env.lanes.ids)
            idx = self._idx[ts.id] = (
                np.concatenate([ts.in_idx, n + ts.in_idx]),
                np.concatenate([2 * n + ts.backlog_idx, ts.out_idx, n + ts.out_idx]),
            )
        return idx


def _extras_size(ts: "TrafficSignal") -> int:
    return len(ts.backlog_idx) + 2 * len(ts.out_idx)


class BacklogObservation(DefaultObservation):
    """sumo-rl's default, then per incoming edge (``ts.topo.in_edges`` order) the vehicles waiting
    to be inserted there or upstream (``env.backlog()``) / ``BACKLOG_SCALE``, capped at
    ``BACKLOG_CLIP``, then per outgoing lane (``ts.topo.out_lanes``) density and queue, scaled by
    lane capacity as the incoming ones (spillback). Fixed size per agent."""

    def __init__(self) -> None:
        self._features = _BacklogFeatures()

    def space(self, ts: "TrafficSignal") -> spaces.Box:
        base = super().space(ts)
        nb, no = len(ts.backlog_idx), len(ts.out_idx)
        high = np.concatenate([base.high, np.full(nb, BACKLOG_CLIP), np.ones(2 * no)]).astype(np.float32)
        return spaces.Box(low=np.zeros_like(high), high=high)

    def __call__(self, ts: "TrafficSignal", env: "LeedTrafficEnv") -> np.ndarray:
        vec = self._features.vector(env)
        lanes, extras = self._features.index(ts, env)
        k = ts.num_green_phases + 1
        out = np.zeros(k + len(lanes) + len(extras), dtype=np.float32)
        _phase_head(out, ts, env)
        out[k : k + len(lanes)] = vec[lanes]
        out[k + len(lanes) :] = vec[extras]
        return out


class PressureBacklogObservation(PressureObservation):
    """The pressure observation, then the same extras as ``backlog`` (backlog per incoming edge,
    outgoing-lane density and queue)."""

    def __init__(self) -> None:
        self._features = _BacklogFeatures()

    def space(self, ts: "TrafficSignal") -> spaces.Box:
        n = super().space(ts).shape[0] + _extras_size(ts)
        return spaces.Box(low=-np.ones(n, dtype=np.float32) * np.inf, high=np.ones(n, dtype=np.float32) * np.inf)

    def __call__(self, ts: "TrafficSignal", env: "LeedTrafficEnv") -> np.ndarray:
        vec = self._features.vector(env)
        return np.concatenate([super().__call__(ts, env), vec[self._features.index(ts, env)[1]]])


PHASE_FEATURES = 10
"""Features per green phase of the ``phase`` observation (the phase policy reads its input as
[n_phases, PHASE_FEATURES]; the pretrained policy file records it)."""
COUNT_SCALE = 10.0
"""Vehicles per unit in the ``phase`` observation's counts."""
COUNT_CLIP = 10.0
"""Scaled counts are capped here (100 vehicles)."""


class PhaseObservation:
    """Per green phase, what the movements it serves see (FRAP/MPLight-style, issue 10): the same
    10 features at any junction, whatever its lanes or phases, so one network can score the
    phases of every intersection of every city. Row p = [p is the current green, the min green
    has passed (same in every row), time in the current phase / max_green (capped at 2), pressure
    of p's links (in-lane minus out-lane vehicles, max-pressure's quantity), halting vehicles on
    p's incoming lanes, vehicles on them, halting vehicles on p's outgoing lanes (spillback),
    vehicles waiting to enter the network behind p's incoming edges (insertion backlog), p's
    incoming lanes / 4, p's fullest incoming lane's queue as a fraction of its capacity]; counts
    / ``COUNT_SCALE``, capped at +-``COUNT_CLIP``. Flattened row by row: size n_phases x 10."""

    def __init__(self) -> None:
        self._idx: dict[str, tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], np.ndarray]] = {}

    def space(self, ts: "TrafficSignal") -> spaces.Box:
        n = ts.num_green_phases * PHASE_FEATURES
        return spaces.Box(low=-np.full(n, COUNT_CLIP, np.float32), high=np.full(n, COUNT_CLIP, np.float32))

    def _index(self, ts: "TrafficSignal"):
        idx = self._idx.get(ts.id)
        if idx is None:
            slot = {e: k for k, e in enumerate(ts.topo.in_edges)}
            lane_ids = ts.topo.in_lanes
            in_pos = {int(i): lane_ids[k] for k, i in enumerate(ts.in_idx)}
            backlog, out_lanes = [], []
            for lanes, outs in zip(ts.phase_lane_idx, ts.phase_link_out_idx):
                edges = {in_pos[int(i)].rsplit("_", 1)[0] for i in lanes}
                backlog.append(np.array(sorted(ts.backlog_idx[slot[e]] for e in edges if e in slot), np.int64))
                out_lanes.append(np.unique(outs))
            n_lanes = np.array([len(x) for x in ts.phase_lane_idx], np.float32) / 4.0
            idx = self._idx[ts.id] = (backlog, out_lanes, list(ts.phase_lane_idx), n_lanes)
        return idx

    def __call__(self, ts: "TrafficSignal", env: "LeedTrafficEnv") -> np.ndarray:
        backlog_idx, out_lanes, in_lanes, n_lanes = self._index(ts)
        lanes = env.lanes
        backlog = env.backlog()
        P = ts.num_green_phases
        out = np.zeros((P, PHASE_FEATURES), dtype=np.float32)
        out[ts.green_phase, 0] = 1.0
        since = ts.time_since_change(env.sim_time)
        out[:, 1] = 0.0 if since < ts.min_green + ts.yellow_time else 1.0
        out[:, 2] = min(since / max(ts.max_green, 1), 2.0)
        out[:, 3] = env.phase_pressures(ts) / COUNT_SCALE
        for p in range(P):
            i = in_lanes[p]
            out[p, 4] = lanes.halt[i].sum() / COUNT_SCALE
            out[p, 5] = lanes.veh[i].sum() / COUNT_SCALE
            out[p, 6] = lanes.halt[out_lanes[p]].sum() / COUNT_SCALE
            out[p, 7] = backlog[backlog_idx[p]].sum() / COUNT_SCALE
            out[p, 9] = lanes.queue[i].max() if len(i) else 0.0
        out[:, 8] = n_lanes
        np.clip(out, -COUNT_CLIP, COUNT_CLIP, out=out)
        return out.reshape(-1)


OBSERVATIONS: dict[str, Callable[[], ObservationFunction]] = {
    "default": DefaultObservation,
    "pressure": PressureObservation,
    "backlog": BacklogObservation,
    "pressure-backlog": PressureBacklogObservation,
    "phase": PhaseObservation,
}


def get_observation(obs: str | ObservationFunction) -> ObservationFunction:
    if isinstance(obs, str):
        if obs not in OBSERVATIONS:
            from leed_traffic.errors import UserError

            raise UserError(f"Unknown observation {obs!r}; choose one of {', '.join(OBSERVATIONS)}.")
        return OBSERVATIONS[obs]()
    return obs
