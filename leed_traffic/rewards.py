"""Reward functions: swappable callables ``(signal, env) -> float``, registered by name.

``diff-waiting-time`` (default) reproduces sumo-rl: the drop, since the last decision, of the
accumulated waiting time (s / 100) of the vehicles on the agent's incoming lanes, each vehicle's
waiting time attributed to the lane it accrued on. ``pressure`` and ``queue`` are sumo-rl's too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from leed_traffic.env import LeedTrafficEnv
    from leed_traffic.signal import TrafficSignal

RewardFunction = Callable[["TrafficSignal", "LeedTrafficEnv"], float]


def accumulated_waiting_time_per_lane(ts: "TrafficSignal", env: "LeedTrafficEnv") -> list[float]:
    """sumo-rl's per-lane attribution of each vehicle's accumulated waiting time.

    A vehicle's waiting time on its current lane is its accumulated waiting time minus what is
    attributed to the other lanes it was seen on. Those other entries only change while the
    vehicle is on them, so their sum is kept per vehicle until it is seen on another lane (the same
    numbers summed in the same order: results are identical to recomputing, at a cost that no
    longer grows with the length of the trip).
    """
    out = []
    vehicles = env.vehicle_lane_wait
    others = env.vehicle_wait_elsewhere
    acc_of = env.accumulated_waiting_time
    ids = env.lanes.ids
    vehicles_on = env.lanes.vehicles
    for li in ts.in_idx.tolist():
        on_lane = vehicles_on(li)
        if not on_lane:  # most lanes are empty most of the time
            out.append(0.0)
            continue
        lane = ids[li]
        total = 0.0
        for veh in on_lane:
            acc = acc_of(veh)
            per_lane = vehicles.get(veh)
            if per_lane is None:
                vehicles[veh] = per_lane = {lane: acc}
            elif len(per_lane) == 1 and lane in per_lane:  # only ever seen here: nothing to subtract
                per_lane[lane] = acc
            else:
                known = others.get(veh)
                if known is not None and known[0] == lane:
                    rest = known[1]
                else:
                    rest = sum(v for k, v in per_lane.items() if k != lane)
                    others[veh] = (lane, rest)
                per_lane[lane] = acc - rest
            total += per_lane[lane]
        out.append(total)
    return out


def diff_waiting_time(ts: "TrafficSignal", env: "LeedTrafficEnv") -> float:
    wait = sum(accumulated_waiting_time_per_lane(ts, env)) / 100.0
    reward = ts.last_measure - wait
    ts.last_measure = wait
    return reward


def pressure(ts: "TrafficSignal", env: "LeedTrafficEnv") -> float:
    """Vehicles leaving minus vehicles approaching (sumo-rl's sign: higher is better)."""
    veh = env.lanes.veh
    return float(veh[ts.out_idx].sum() - veh[ts.in_idx].sum())


def queue(ts: "TrafficSignal", env: "LeedTrafficEnv") -> float:
    return -float(env.lanes.halt[ts.in_idx].sum())


REWARDS: dict[str, RewardFunction] = {
    "diff-waiting-time": diff_waiting_time,
    "pressure": pressure,
    "queue": queue,
}
NEEDS_VEHICLE_IDS = {"diff-waiting-time"}


def get_reward(name: str | RewardFunction) -> RewardFunction:
    if isinstance(name, str):
        if name not in REWARDS:
            from leed_traffic.errors import UserError

            raise UserError(f"Unknown reward {name!r}; choose one of {', '.join(REWARDS)}.")
        return REWARDS[name]
    return name


__all__ = ["REWARDS", "get_reward", "diff_waiting_time", "pressure", "queue", "np"]
