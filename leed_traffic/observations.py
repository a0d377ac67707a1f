"""Observation functions: swappable callables ``(signal, env) -> np.ndarray`` with a ``space``.

The default reproduces sumo-rl's (a test checks the values are equal): green-phase one-hot,
a min-green flag, per incoming lane density and queue, each scaled by the lane's capacity
``length / (minGap + mean vehicle length)`` and capped at 1. Lane data come from the env's lane
table, filled by one batched libsumo subscription read per decision step.
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


class DefaultObservation:
    """sumo-rl's default: [phase one-hot, min-green flag, lane densities, lane queues]."""

    def space(self, ts: "TrafficSignal") -> spaces.Box:
        n = ts.num_green_phases + 1 + 2 * len(ts.in_idx)
        return spaces.Box(low=np.zeros(n, dtype=np.float32), high=np.ones(n, dtype=np.float32))

    def __call__(self, ts: "TrafficSignal", env: "LeedTrafficEnv") -> np.ndarray:
        out = np.zeros(ts.num_green_phases + 1 + 2 * len(ts.in_idx), dtype=np.float32)
        out[ts.green_phase] = 1.0
        out[ts.num_green_phases] = 0.0 if ts.time_since_change(env.sim_time) < ts.min_green + ts.yellow_time else 1.0
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


OBSERVATIONS: dict[str, Callable[[], ObservationFunction]] = {
    "default": DefaultObservation,
    "pressure": PressureObservation,
}


def get_observation(obs: str | ObservationFunction) -> ObservationFunction:
    if isinstance(obs, str):
        if obs not in OBSERVATIONS:
            from leed_traffic.errors import UserError

            raise UserError(f"Unknown observation {obs!r}; choose one of {', '.join(OBSERVATIONS)}.")
        return OBSERVATIONS[obs]()
    return obs
