"""Reward functions: swappable callables ``(signal, env) -> float``, registered by name.

``diff-waiting-time`` (default) reproduces sumo-rl: the drop, since the last decision, of the
accumulated waiting time (s / 100) of the vehicles on the agent's incoming lanes, each vehicle's
waiting time attributed to the lane it accrued on. ``pressure`` and ``queue`` are sumo-rl's too.
``queue-backlog`` is ``queue`` that also sees the vehicles kept out of the network and the jam
downstream (issue 12, see its docstring).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from leed_traffic.env import LeedTrafficEnv
    from leed_traffic.signal import TrafficSignal

RewardFunction = Callable[["TrafficSignal", "LeedTrafficEnv"], float]


def lane_waiting_time(env: "LeedTrafficEnv", li: int, on_lane) -> float:
    """sumo-rl's waiting time on lane ``li`` (lane-table index) of the vehicles ``on_lane``.

    A vehicle's waiting time on its current lane is its accumulated waiting time minus what is
    attributed to the other lanes it was seen on. Those other entries only change while the
    vehicle is on them, so their sum is kept per vehicle until it is seen on another lane (the same
    numbers summed in the same order: results are identical to recomputing, at a cost that no
    longer grows with the length of the trip). The one place this rule lives: the per-agent reward
    below and the env's batched reward for all agents (``env.BatchedWaitingTime``) both call it.
    """
    vehicles, others, acc_of = env.vehicle_lane_wait, env.vehicle_wait_elsewhere, env.accumulated_waiting_time
    lane = env.lanes.ids[li]
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
    return total


def accumulated_waiting_time_per_lane(ts: "TrafficSignal", env: "LeedTrafficEnv") -> list[float]:
    """sumo-rl's per-lane attribution of each vehicle's accumulated waiting time (``lane_waiting_time``)."""
    vehicles_on = env.lanes.vehicles
    out = []
    for li in ts.in_idx.tolist():
        on_lane = vehicles_on(li)
        out.append(lane_waiting_time(env, li, on_lane) if on_lane else 0.0)  # most lanes are empty
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


SPILLBACK_WEIGHT = 0.5
"""Weight of a vehicle halted on an agent's outgoing lane in ``queue-backlog``."""


def queue_backlog(ts: "TrafficSignal", env: "LeedTrafficEnv") -> float:
    """``-(halted on the incoming lanes + waiting to be inserted on the approaches
    + SPILLBACK_WEIGHT x halted on the outgoing lanes)``, in vehicles like ``queue``.

    Why these terms. ``queue`` only counts vehicles on the controlled lanes, so it has two blind
    spots that a learner exploits (ingolstadt7/21: 240-270 vehicles never entered the network
    under learned policies, while their reward and training curve looked fine):

    * a vehicle that cannot be inserted because the approach is full back to its departure point
      is on no lane: starving an approach until it spills back past the insertion points makes
      its queue stop growing. The backlog term (``env.backlog()``: SUMO's insertion queue, counted
      at the first agent approach on each waiting vehicle's route within ``BACKLOG_REACH_M``) keeps
      charging every such vehicle, one per vehicle, exactly as if it stood on the lane;
    * releasing a queue into an exit that is already jammed moves halted vehicles from the
      agent's lanes onto the downstream link, where they halt again and block the intersection.
      Charging halted vehicles on the outgoing lanes at half weight makes that move worth half of
      sending them into a free exit, so the agent learns to serve movements that can flow. Half,
      not one: those vehicles already count in full in the downstream agent's queue, and the
      agent only partly controls them (weight 1 would cancel the gain of any discharge into a
      queue, weight 0 is ``queue``'s blind spot).

    Scale: the same unit as ``queue`` (vehicles, no divisor), equal to it when nothing waits to
    be inserted and nothing halts downstream, so ``queue`` results and settings carry over.
    """
    halt = env.lanes.halt
    return -float(halt[ts.in_idx].sum() + env.backlog()[ts.backlog_idx].sum()
                  + SPILLBACK_WEIGHT * halt[ts.out_idx].sum())


REWARDS: dict[str, RewardFunction] = {
    "diff-waiting-time": diff_waiting_time,
    "pressure": pressure,
    "queue": queue,
    "queue-backlog": queue_backlog,
}
NEEDS_VEHICLE_IDS = {"diff-waiting-time"}


def get_reward(name: str | RewardFunction) -> RewardFunction:
    if isinstance(name, str):
        if name not in REWARDS:
            from leed_traffic.errors import UserError

            raise UserError(f"Unknown reward {name!r}; choose one of {', '.join(REWARDS)}.")
        return REWARDS[name]
    return name


__all__ = ["REWARDS", "get_reward", "diff_waiting_time", "pressure", "queue", "queue_backlog"]
