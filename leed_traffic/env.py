"""Multi-agent traffic-signal environment: a PettingZoo ParallelEnv on libsumo.

One agent per traffic light with at least two distinct green phases; every agent acts every
``delta_time`` simulated seconds by choosing its next green phase (see ``signal.py`` for the
phase rules, which follow sumo-rl). Observation and reward are swappable functions
(``observations.py``, ``rewards.py``) with sumo-rl's as defaults.

Why it is fast: lane data are read once per decision and only for lanes that hold a vehicle
(see ``LaneTable``: on libsumo direct reads beat subscriptions, which SUMO re-evaluates for every
lane at every step), the simulation advances with one ``simulationStep(t)`` call per transition
boundary rather than per second, and observations are slices of shared numpy arrays. Traffic
lights that are not agents keep their own programs. Measured in ``benchmarks/bench_env.py``.

Large cities (issue 13: 400-1,000 agents), where the env's own cost per agent decides: libsumo's C
functions are called without their Python wrappers, the outgoing lanes no agent enters from are
read only when something asks for them, the default observation and the default reward
(sumo-rl's) are computed for all agents at once (``_DefaultObservationBatch``,
``_DiffWaitingTimeBatch``: bit for bit the values of ``observations.DefaultObservation`` and
``rewards.diff_waiting_time``, which the env calls per agent for anything else), and an action
that keeps the phase costs a comparison (``TrafficSignal.set_next_phase``). Measured in
``benchmarks/bench_large.py``.

What the metric counts (issue 12): a jam must never look like progress. ``InsertionBacklog`` counts
the vehicles SUMO could not insert yet, per agent approach, for the observations and rewards that
ask for it (``backlog``, ``pressure-backlog``, ``queue-backlog``; nobody else pays for it), the
outgoing lanes' occupancy/halting (spillback) come from the same lane table as the incoming ones,
and the info at the episode's end carries the honest ``mean_delay`` (never-inserted vehicles
charged, as evaluation's ``metrics.episode_metrics``), which the trainer's curve reads first.

libsumo runs one simulation per process; ``use_gui=True`` switches to TraCI and sumo-gui.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from leed_traffic import sumo_env
from leed_traffic.errors import UserError
from leed_traffic.metrics import honest_mean_delay
from leed_traffic.netfile import program_states, read_net
from leed_traffic.observations import DefaultObservation, ObservationFunction, get_observation
from leed_traffic.rewards import NEEDS_VEHICLE_IDS, RewardFunction, diff_waiting_time, get_reward, lane_waiting_time
from leed_traffic.scenario import Scenario, build_scenario
from leed_traffic.signal import MIN_GAP, SignalTopology, TrafficSignal, read_topology
from leed_traffic.state import ApproachState, IntersectionState, PhaseInfo

log = logging.getLogger(__name__)

VEH_NUMBER, VEH_IDS, HALTING, MEAN_LENGTH = 0x10, 0x12, 0x14, 0x15


@dataclass
class EnvConfig:
    """Environment options (every one can be passed to ``make_env`` as a keyword)."""

    delta_time: int | None = None
    """Seconds between decisions; default: the scenario's (sumo-rl's 5 on OSM cities, RESCO's 10)."""
    yellow_time: int | None = None
    """Yellow seconds on every phase change; default: the scenario's (sumo-rl's 2, RESCO's 3)."""
    all_red_time: int = 0
    """All-red clearance after the yellow, seconds (0 as in sumo-rl)."""
    min_green: int = 5
    """A change is only possible this long after the previous one's yellow (enforced)."""
    max_green: int = 50
    """Longest green; enforced (forces a change) only with ``enforce_max_green``."""
    enforce_max_green: bool = False
    """sumo-rl never forces a change; real controllers do. Off by default for comparability."""
    observation: Any = "default"
    """Name in ``observations.OBSERVATIONS`` or an ObservationFunction."""
    reward: Any = "diff-waiting-time"
    """Name in ``rewards.REWARDS`` or a callable ``(signal, env) -> float``."""
    seconds: int | None = None
    """Episode length; default: the scenario's ``end - begin``."""
    time_to_teleport: int | None = None
    """SUMO jam teleport threshold; default: the scenario's."""
    waiting_time_memory: int = 1000
    """Window of SUMO's accumulated waiting time, s (sumo-rl's default)."""
    max_depart_delay: int = -1
    """Drop vehicles that cannot be inserted for this long (-1: never, they count as delay)."""
    control: bool = True
    """False runs the lights' own programs (fixed/actuated/Webster) through the same loop."""
    use_gui: bool = False
    tripinfo: str | None = None
    """Write SUMO tripinfo (with unfinished trips) here for ``metrics``."""
    additional_files: tuple[str, ...] = ()
    sumo_args: tuple[str, ...] = ()
    seed: int = 0
    """Episode seed: SUMO's seed and the demand file (``scenario.route_file(seed)``)."""


def _complete(private: str) -> property:
    """A ``LaneTable`` array with its lazy lanes read first when they are stale."""

    def get(self: "LaneTable") -> np.ndarray:
        if self._stale:
            self._read_lazy()
        return getattr(self, private)

    return property(get)


class LaneTable:
    """Per-lane arrays refreshed once per decision.

    On libsumo the table is read with direct getters (libsumo's C functions, not its Python
    wrappers): one vehicle count per lane, then halting number, mean vehicle length (and vehicle
    ids) only for the lanes that hold a vehicle; an empty lane has 0 halting, mean length 0 and no
    ids by definition (SUMO computes all four from the same vehicle list). This is cheaper than
    lane subscriptions, which libsumo evaluates for every lane at every ``simulationStep`` call
    (the yellow boundaries included) and converts into a dict per lane. Over TraCI (``use_gui``) a
    call is a socket round trip, so there the table uses one subscription read per decision.

    Lanes are ordered eager first (``n_eager``: the agents' incoming lanes, which the default
    observation and reward read), then the outgoing lanes no agent enters from. Those are read
    lazily: only when something asks for ``veh``, ``halt``, ``mlen``, ``density``, ``queue`` or
    their vehicles (the backlog observations, pressure, the experts), at the same simulation time,
    once per decision. The default observation and reward read the private arrays of the eager
    part only, so the exits are never read for them (37 % of the lanes of luxembourg, 39 % of helsinki).
    """

    def __init__(self, ids: list[str], lengths: np.ndarray, with_vehicle_ids: bool, n_eager: int | None = None) -> None:
        self.ids = ids
        self.index = {ln: i for i, ln in enumerate(ids)}
        self.length = lengths
        self.with_vehicle_ids = with_vehicle_ids
        n = len(ids)
        self.n_eager = n if n_eager is None else int(n_eager)
        self._veh = np.zeros(n)
        self._halt = np.zeros(n)
        self._mlen = np.zeros(n)
        self._density = np.zeros(n)
        self._queue = np.zeros(n)
        self._vids: list[tuple[str, ...]] = [()] * n
        self._direct = False
        self._nonempty: list[int] = []
        self._nonempty_lazy: list[int] = []
        self._stale = False
        """True while the lazy lanes hold the previous decision's values (read on first use)."""
        self._sim = None
        self.version = 0
        """Incremented by every ``refresh``: what is derived from the table can be cached per decision."""

    # the public arrays: complete (the lazy lanes read first if they are stale)
    veh = _complete("_veh")
    halt = _complete("_halt")
    mlen = _complete("_mlen")
    density = _complete("_density")
    queue = _complete("_queue")

    def subscribe(self, sim) -> None:
        """Prepare reading from ``sim`` (a fresh simulation): direct reads on libsumo, else subscriptions."""
        n = len(self.ids)
        for a in (self._veh, self._halt, self._mlen, self._density, self._queue):
            a.fill(0.0)
        self._vids = [()] * n
        self._nonempty, self._nonempty_lazy = [], []
        self._stale = False
        self._sim = sim
        self._direct = getattr(sim, "__name__", "").split(".")[0] == "libsumo"
        if self._direct:
            # libsumo's Python getters are one-line wrappers around its C functions: calling the C
            # functions directly saves a Python call per read (thousands per decision in a big city)
            c = _libsumo_c(sim)
            lane = sim.lane
            self._get_number = getattr(c, "lane_getLastStepVehicleNumber", lane.getLastStepVehicleNumber)
            self._get_halting = getattr(c, "lane_getLastStepHaltingNumber", lane.getLastStepHaltingNumber)
            self._get_length = getattr(c, "lane_getLastStepLength", lane.getLastStepLength)
            self._get_ids = getattr(c, "lane_getLastStepVehicleIDs", lane.getLastStepVehicleIDs)
            return
        vars_ = [VEH_NUMBER, HALTING, MEAN_LENGTH] + ([VEH_IDS] if self.with_vehicle_ids else [])
        for ln in self.ids:
            sim.lane.subscribe(ln, vars_)

    def refresh(self, sim) -> None:
        self._sim = sim
        if self._direct:
            self._nonempty = self._read_direct(0, self.n_eager, self._nonempty)
            self._stale = self.n_eager < len(self.ids)
        else:
            self._read_subscriptions(sim.lane)
            self._stale = False
        self._derive(0, self.n_eager if self._stale else len(self.ids))
        self.version += 1

    def _derive(self, lo: int, hi: int) -> None:
        cap = self.length[lo:hi] / (MIN_GAP + self._mlen[lo:hi])
        np.minimum(self._veh[lo:hi] / cap, 1.0, out=self._density[lo:hi])
        np.minimum(self._halt[lo:hi] / cap, 1.0, out=self._queue[lo:hi])

    def _read_lazy(self) -> None:
        self._stale = False
        n = len(self.ids)
        self._nonempty_lazy = self._read_direct(self.n_eager, n, self._nonempty_lazy)
        self._derive(self.n_eager, n)

    def _read_direct(self, lo: int, hi: int, previous: list[int]) -> list[int]:
        """Read lanes ``lo:hi``; returns the indices of those holding a vehicle."""
        ids, vids = self.ids, self._vids
        veh, halt, mlen = self._veh[lo:hi], self._halt[lo:hi], self._mlen[lo:hi]
        veh[:] = list(map(self._get_number, ids[lo:hi]))
        nonempty = np.flatnonzero(veh).tolist()
        halt.fill(0.0)
        mlen.fill(0.0)
        if self.with_vehicle_ids:
            for i in previous:
                vids[i] = ()
        if not nonempty:
            return []
        names = [ids[lo + i] for i in nonempty]
        halt[nonempty] = list(map(self._get_halting, names))
        mlen[nonempty] = list(map(self._get_length, names))
        if lo:
            nonempty = [lo + i for i in nonempty]
        if self.with_vehicle_ids:
            for i, v in zip(nonempty, map(self._get_ids, names)):
                vids[i] = v
        return nonempty

    def _read_subscriptions(self, lane) -> None:
        res = lane.getAllSubscriptionResults()
        veh, halt, mlen, vids = self._veh, self._halt, self._mlen, self._vids
        for i, ln in enumerate(self.ids):
            r = res[ln]
            veh[i] = r[VEH_NUMBER]
            halt[i] = r[HALTING]
            mlen[i] = r[MEAN_LENGTH]
            if self.with_vehicle_ids:
                vids[i] = r[VEH_IDS]

    def vehicles(self, i: int) -> tuple[str, ...]:
        if self._stale and i >= self.n_eager:
            self._read_lazy()
        return self._vids[i]


def _libsumo_c(sim):
    """libsumo's compiled module (``_libsumo``: the functions its Python wrappers call), or None."""
    return getattr(getattr(sim, "libsumo", None), "_libsumo", None)


BACKLOG_REACH_M = 500.0
"""How far upstream of an agent's incoming edge a waiting vehicle's departure may lie, metres of
route driven before that edge (the departure edge included), for it to count in that agent's backlog."""


class InsertionBacklog:
    """Vehicles waiting to be inserted (SUMO's insertion backlog), per agent incoming edge.

    A vehicle SUMO cannot insert stays in its insertion queue (``--max-depart-delay -1``): no lane
    reading sees it, yet it waits, and the honest delay charges it. It is counted at the first
    agent incoming edge its route reaches, if that edge lies within ``reach`` metres of driving
    from the start of the route, with no other traffic light on the way (a light that is not an
    agent keeps its program: what it holds back is not the next agent's doing). Following the
    route rather than the network means a departure edge that forks towards two agents counts
    each vehicle at the one it will actually reach; on ingolstadt7 the waiting vehicles depart one
    edge (40-100 m) upstream of an agent's approach, so the approach edge alone would miss them.

    Cost per decision: one ``simulation.getPendingVehicles()`` call (10-50 µs with hundreds
    waiting) plus a dict lookup per waiting vehicle; a vehicle's route is read (``getRoute``, a few
    µs) once, when it first shows up waiting. ``edge.getPendingVehicles`` per edge was measured
    10-100 times slower (each call scans the whole queue). Refreshed lazily: only when an
    observation or reward calls ``env.backlog()``, at most once per decision.
    """

    def __init__(self, net, signals: dict[str, TrafficSignal], reach: float = BACKLOG_REACH_M) -> None:
        self.reach = reach
        self.slot_of_edge: dict[str, int] = {}
        for ts in signals.values():  # an edge two agents share (rare) is one slot, seen by both
            ts.backlog_idx = np.array(
                [self.slot_of_edge.setdefault(e, len(self.slot_of_edge)) for e in ts.topo.in_edges], dtype=np.int64)
        self.counts = np.zeros(len(self.slot_of_edge))
        self.length = {e.getID(): e.getLength() for e in net.getEdges()}
        agent_tls = set(signals)
        self.stop = {
            in_lane.getEdge().getID()
            for tls in net.getTrafficLights() if tls.getID() not in agent_tls
            for in_lane, _out, _idx in tls.getConnections()
        } - set(self.slot_of_edge)
        """Edges that end at a light that is not an agent: the walk along a route stops there."""
        self._slot: dict[str, int] = {}
        self._time: float | None = None

    def reset(self) -> None:
        self.counts.fill(0.0)
        self._slot = {}
        self._time = None

    def slot(self, route: tuple[str, ...] | list[str]) -> int:
        """Backlog slot of a vehicle with this route, or -1 (no agent approach within reach)."""
        slot_of, stop, length, dist = self.slot_of_edge, self.stop, self.length, 0.0
        for e in route:
            s = slot_of.get(e)
            if s is not None:
                return s
            dist += length.get(e, 0.0)
            if e in stop or dist > self.reach:
                return -1
        return -1

    def refresh(self, sim, now: float) -> np.ndarray:
        if self._time == now:
            return self.counts
        pending = sim.simulation.getPendingVehicles()
        known, route_of = self._slot, sim.vehicle.getRoute
        current = {v: known[v] if v in known else self.slot(route_of(v)) for v in pending}
        self._slot = current  # inserted vehicles drop out
        self.counts.fill(0.0)
        hits = [s for s in current.values() if s >= 0]
        if hits:
            self.counts += np.bincount(hits, minlength=len(self.counts))
        self._time = now
        return self.counts


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)


class _DefaultObservationBatch:
    """``observations.DefaultObservation`` for every agent at once, values bit for bit equal.

    One float32 buffer per decision holds every agent's observation back to back; the lane part
    is two fancy-index copies (density, queue) over all agents, the phase head two scatters, and
    each agent gets a view of its own slice (a fresh buffer every decision: an observation kept
    by a caller never changes afterwards). Per agent that leaves one slice and two attribute
    reads, instead of an allocation, a function call and four small numpy operations."""

    def __init__(self, signals: list[TrafficSignal]) -> None:
        sizes = [ts.num_green_phases + 1 + 2 * len(ts.in_idx) for ts in signals]
        ends = np.cumsum(sizes, dtype=np.int64)
        starts = ends - np.asarray(sizes, dtype=np.int64)
        self.total = int(ends[-1]) if len(sizes) else 0
        self.n = len(signals)
        self.bounds = list(zip(starts.tolist(), ends.tolist()))
        self.starts = starts
        self.flag_pos = starts + np.array([ts.num_green_phases for ts in signals], dtype=np.int64)
        self.threshold = np.array([ts.min_green + ts.yellow_time for ts in signals], dtype=np.float64)
        dens, que, lanes = [], [], []
        for k, ts in enumerate(signals):
            n = len(ts.in_idx)
            first = int(starts[k]) + ts.num_green_phases + 1
            dens.append(np.arange(first, first + n, dtype=np.int64))
            que.append(np.arange(first + n, first + 2 * n, dtype=np.int64))
            lanes.append(ts.in_idx)
        self.dens_pos, self.queue_pos, self.lane_idx = _cat(dens), _cat(que), _cat(lanes)

    def __call__(self, signals: list[TrafficSignal], now: float, lanes: LaneTable) -> list[np.ndarray]:
        buf = np.zeros(self.total, dtype=np.float32)
        buf[self.dens_pos] = lanes._density[self.lane_idx]  # incoming lanes: never stale
        buf[self.queue_pos] = lanes._queue[self.lane_idx]
        green = np.fromiter([ts.green_phase for ts in signals], dtype=np.int64, count=self.n)
        last = np.fromiter([ts.last_change for ts in signals], dtype=np.float64, count=self.n)
        buf[self.starts + green] = 1.0
        # DefaultObservation: 0.0 if time_since_change < min_green + yellow_time else 1.0
        buf[self.flag_pos] = np.where((now - last) < self.threshold, 0.0, 1.0)
        return [buf[a:b] for a, b in self.bounds]


class _DiffWaitingTimeBatch:
    """``rewards.diff_waiting_time`` for every agent at once, values bit for bit equal.

    The same per-vehicle, per-lane attribution (``rewards.lane_waiting_time``),
    run over the (agent, incoming lane) visits in the same order (agents in env order, lanes in
    ``in_idx`` order, a lane shared by two agents visited twice), but only over the visits whose
    lane holds a vehicle: the empty ones contribute 0.0 without a Python iteration. Each agent's
    waiting time is then the same left-to-right ``sum`` over its lanes' totals."""

    def __init__(self, signals: list[TrafficSignal]) -> None:
        seq = [ts.in_idx for ts in signals]
        self.visits = np.concatenate(seq).astype(np.int64) if seq else np.zeros(0, np.int64)
        ends = np.cumsum([len(x) for x in seq], dtype=np.int64)
        self.bounds = list(zip((ends - [len(x) for x in seq]).tolist(), ends.tolist()))

    def __call__(self, env: LeedTrafficEnv, signals: list[TrafficSignal]) -> list[float]:
        lanes = env.lanes
        visits = self.visits
        totals = np.zeros(len(visits))
        occupied = np.flatnonzero(lanes._veh[visits])  # incoming lanes: never stale
        if len(occupied):
            vids = lanes._vids
            for pos in occupied.tolist():
                li = int(visits[pos])
                if vids[li]:
                    totals[pos] = lane_waiting_time(env, li, vids[li])
        flat = totals.tolist()
        out = []
        for ts, (a, b) in zip(signals, self.bounds):
            wait = sum(flat[a:b]) / 100.0
            out.append(ts.last_measure - wait)
            ts.last_measure = wait
        return out


class _NetView:
    """Enough of the TraCI API, answered from sumolib, to read topology without a simulation."""

    def __init__(self, net) -> None:
        self.net = net
        self.trafficlight = self
        self.lane = self

    def _conns(self, tls_id: str):
        by_idx: dict[int, tuple[str, str]] = {}
        for in_lane, out_lane, idx in self.net.getTLS(tls_id).getConnections():
            by_idx.setdefault(idx, (in_lane.getID(), out_lane.getID()))
        n = max(by_idx) + 1 if by_idx else 0
        return [by_idx.get(i) for i in range(n)]

    def getControlledLanes(self, tls_id: str) -> list[str]:
        return [c[0] for c in self._conns(tls_id) if c]

    def getControlledLinks(self, tls_id: str):
        return [[(c[0], c[1], "")] if c else [] for c in self._conns(tls_id)]

    def getLength(self, lane: str) -> float:
        return self.net.getLane(lane).getLength()


class LeedTrafficEnv(ParallelEnv):
    metadata = {"name": "leed_traffic_v0", "render_modes": []}

    def __init__(self, scenario: Scenario, config: EnvConfig | None = None) -> None:
        self.scenario = scenario
        config = config or EnvConfig()
        if config.delta_time is None or config.yellow_time is None:
            config = replace(config, delta_time=config.delta_time or scenario.delta_time,
                             yellow_time=scenario.yellow_time if config.yellow_time is None else config.yellow_time)
        self.config = config
        if config.delta_time <= config.yellow_time + config.all_red_time:
            raise UserError(
                f"delta_time ({config.delta_time}) must exceed yellow_time + all_red_time "
                f"({config.yellow_time + config.all_red_time}); raise delta_time or shorten the yellow."
            )
        if config.min_green < 0 or config.yellow_time < 0 or config.delta_time <= 0:
            raise UserError("delta_time must be positive and yellow_time, min_green non-negative.")
        self.begin = scenario.begin
        self.end = scenario.begin + config.seconds if config.seconds else scenario.end
        if self.end <= self.begin:
            raise UserError(f"seconds must be positive (got {config.seconds}).")
        self.observation_fn: ObservationFunction = get_observation(config.observation)
        self.reward_fn: RewardFunction = get_reward(config.reward)
        self.sim = None
        self.sim_time = float(self.begin)
        net = read_net(scenario.net_file)
        view = _NetView(net)
        self.topologies: dict[str, SignalTopology] = {}
        for tls_id in scenario.agents:
            self.topologies[tls_id] = read_topology(view, net, tls_id, program_states(net, tls_id))
        self.possible_agents = list(scenario.agents) if config.control else []
        self.agents: list[str] = []
        # incoming lanes first (read every decision), then the outgoing lanes no agent enters
        # from (read when something asks for them: ``LaneTable``)
        in_lanes = list(dict.fromkeys(ln for t in self.topologies.values() for ln in t.in_lanes))
        lanes = list(dict.fromkeys(in_lanes + [ln for t in self.topologies.values() for ln in t.out_lanes]))
        lengths = np.array([net.getLane(ln).getLength() for ln in lanes])
        # vehicle ids cost a read per non-empty lane: only the waiting-time reward (and custom
        # rewards, which may need anything) pay for them
        with_ids = not isinstance(config.reward, str) or config.reward in NEEDS_VEHICLE_IDS
        self.lanes = LaneTable(lanes, lengths, with_vehicle_ids=with_ids, n_eager=len(in_lanes))
        self.signals: dict[str, TrafficSignal] = {}
        for a in self.possible_agents:
            ts = TrafficSignal(None, self.topologies[a], yellow_time=config.yellow_time, min_green=config.min_green,
                               max_green=config.max_green, all_red_time=config.all_red_time,
                               enforce_max_green=config.enforce_max_green)
            self._index_signal(ts)
            self.signals[a] = ts
        self._signal_list = list(self.signals.values())
        self._agent_ids = list(self.signals)
        # the default observation and reward, batched over all agents (same values, bit for bit)
        self._obs_batch = (_DefaultObservationBatch(self._signal_list)
                           if type(self.observation_fn) is DefaultObservation and self._signal_list else None)
        self._reward_batch = (_DiffWaitingTimeBatch(self._signal_list)
                              if self.reward_fn is diff_waiting_time and self._signal_list else None)
        self.insertion_backlog = InsertionBacklog(net, self.signals)
        self._obs_spaces = {a: self.observation_fn.space(ts) for a, ts in self.signals.items()}
        self._act_spaces = {a: spaces.Discrete(ts.num_green_phases) for a, ts in self.signals.items()}
        self.vehicle_lane_wait: dict[str, dict[str, float]] = {}
        """sumo-rl's per-vehicle, per-lane share of accumulated waiting time (diff-waiting-time)."""
        self.vehicle_wait_elsewhere: dict[str, tuple[str, float]] = {}
        """Cache for the reward: a vehicle's waiting time attributed to lanes other than its current one."""
        self.episode_seed = config.seed

    # ------------------------------------------------------------------ spaces
    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._act_spaces[agent]

    def _index_signal(self, ts: TrafficSignal) -> None:
        idx = self.lanes.index
        topo = ts.topo
        ts.in_idx = np.array([idx[ln] for ln in topo.in_lanes], dtype=np.int64)
        ts.out_idx = np.array([idx[ln] for ln in topo.out_lanes], dtype=np.int64)
        ts.phase_lane_idx, ts.phase_link_in_idx, ts.phase_link_out_idx = [], [], []
        for p in range(len(topo.greens)):
            links = topo.phase_links(p)
            ts.phase_link_in_idx.append(np.array([idx[li] for li, _ in links], dtype=np.int64))
            ts.phase_link_out_idx.append(np.array([idx[lo] for _, lo in links], dtype=np.int64))
            ts.phase_lane_idx.append(np.array(sorted({idx[li] for li, _ in links}), dtype=np.int64))

    # ------------------------------------------------------------------ simulation
    def sumo_command(self, seed: int) -> list[str]:
        c = self.config
        binary = sumo_env.sumo_binary("sumo-gui" if c.use_gui else "sumo")
        ttt = self.scenario.time_to_teleport if c.time_to_teleport is None else c.time_to_teleport
        cmd = [
            binary, "-n", str(self.scenario.net_file), "-r", str(self.scenario.route_file(seed)),
            "--begin", str(self.begin), "--end", str(self.end),
            "--max-depart-delay", str(c.max_depart_delay),
            "--waiting-time-memory", str(c.waiting_time_memory),
            "--time-to-teleport", str(ttt),
            "--seed", str(seed), "--no-warnings", "--no-step-log",
            # trip statistics of finished vehicles, readable at any time through getParameter
            "--duration-log.statistics", "true", "--no-duration-log", "true", "--verbose", "false",
        ]
        if c.tripinfo:
            cmd += ["--tripinfo-output", str(c.tripinfo), "--tripinfo-output.write-unfinished"]
        if c.additional_files:
            cmd += ["--additional-files", ",".join(map(str, c.additional_files))]
        if c.use_gui:
            cmd += ["--start", "--quit-on-end"]
        return cmd + list(self.scenario.sumo_args) + list(c.sumo_args)

    def _start(self, seed: int) -> None:
        self.close()
        if self.config.use_gui:
            import traci as sim
        else:
            import libsumo as sim
        sim.start(self.sumo_command(seed))
        self.sim = sim
        # the per-vehicle read of the waiting-time reward: libsumo's C function itself when there
        # is one (the method below otherwise), one Python call less per vehicle and decision
        self.__dict__.pop("accumulated_waiting_time", None)
        c = _libsumo_c(sim)
        if c is not None and hasattr(c, "vehicle_getAccumulatedWaitingTime"):
            self.accumulated_waiting_time = c.vehicle_getAccumulatedWaitingTime

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.episode_seed = int(seed)
        self._start(self.episode_seed)
        self.sim_time = float(self.sim.simulation.getTime())
        for ts in self.signals.values():
            ts.sim = self.sim
            ts.install(self.sim_time)
        self.lanes.subscribe(self.sim)
        self.lanes.refresh(self.sim)
        self.insertion_backlog.reset()
        self.vehicle_lane_wait = {}
        self.vehicle_wait_elsewhere = {}
        self.agents = list(self.possible_agents)
        return self._observe(), {a: {} for a in self.agents}

    def _observe(self) -> dict[str, np.ndarray]:
        if self._obs_batch is not None:
            return dict(zip(self._agent_ids, self._obs_batch(self._signal_list, self.sim_time, self.lanes)))
        return {a: self.observation_fn(ts, self) for a, ts in self.signals.items()}

    def _rewards(self) -> dict[str, float]:
        if self._reward_batch is not None:
            return dict(zip(self._agent_ids, self._reward_batch(self, self._signal_list)))
        return {a: float(self.reward_fn(ts, self)) for a, ts in self.signals.items()}

    def step(self, actions: dict[str, int]):
        if self.sim is None or not self.agents and self.config.control:
            raise RuntimeError("call reset() before step() (the episode has ended or never started)")
        now = self.sim_time
        signals = self.signals
        for a, act in actions.items():
            ts = signals.get(a)
            if ts is not None:
                ts.set_next_phase(act, now)
        target = min(now + self.config.delta_time, self.end)
        self._advance(now, target)
        self.lanes.refresh(self.sim)
        obs = self._observe()
        rewards = self._rewards()
        done = self.sim_time >= self.end
        terms = dict.fromkeys(self.agents, False)
        truncs = dict.fromkeys(self.agents, done)
        infos: dict[str, dict] = {a: {} for a in self.agents}
        if done:
            stats = self.episode_stats()
            infos = {a: dict(stats) for a in self.agents}
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def _advance(self, now: float, target: float) -> None:
        """Run to ``target``, stopping at yellow/all-red boundaries of switching signals."""
        boundaries: dict[float, list[TrafficSignal]] = {}
        for ts in [ts for ts in self._signal_list if ts.is_yellow]:
            for t in (ts.last_change + ts.yellow_time, ts.switch_to_green_at):
                if now < t <= target:
                    boundaries.setdefault(t, []).append(ts)
        for t in sorted(boundaries):
            self.sim.simulationStep(t)
            for ts in boundaries[t]:
                ts.on_time(t)
        self.sim.simulationStep(target)
        self.sim_time = float(self.sim.simulation.getTime())

    def run_to_end(self) -> None:
        """Advance without decisions (program-controlled episodes)."""
        while self.sim_time < self.end:
            self._advance(self.sim_time, min(self.sim_time + self.config.delta_time, self.end))

    def close(self) -> None:
        if self.sim is not None:
            try:
                self.sim.close()
            except Exception:  # noqa: BLE001 - closing a dead connection is fine
                pass
            self.sim = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def backlog(self) -> np.ndarray:
        """Vehicles waiting to be inserted per backlog slot (an agent's slots: ``ts.backlog_idx``,
        one per incoming edge in ``topo.in_edges`` order), read at most once per decision."""
        return self.insertion_backlog.refresh(self.sim, self.sim_time)

    def honest_delay(self) -> dict[str, float]:
        """The honest mean delay of the episode so far: RESCO's timeLoss + departDelay over every
        vehicle due to depart by now, never-inserted ones charged ``now - intended depart``
        (``metrics.honest_mean_delay``, the definition evaluation applies to tripinfo).

        Read from the live simulation, once (at the episode's end: a few µs per vehicle present):
        finished trips from SUMO's running trip statistics (count x mean), vehicles still driving
        from ``vehicle.getTimeLoss`` + ``getDepartDelay`` (what tripinfo's unfinished rows hold),
        never-inserted ones from ``getDepartDelay`` of each vehicle still in the insertion queue
        (``now - intended depart``). Approximations, all small: SUMO prints the running means and
        tripinfo with two decimals (measured |difference| < 0.01 s/vehicle); a vehicle whose
        fractional depart falls inside the last simulation step was never tried by SUMO, so it is
        missing here while ``metrics`` counts it with a wait under a second (it dilutes the mean by
        about mean / vehicles: 0.3 s of 1290 s on ingolstadt21 under a starving policy, one such
        vehicle among 4281); vehicles inside a teleport at the end (off the road, not in
        ``getIDList``) are left out likewise (cologne8 with a 60 s teleport threshold and a
        starving policy: 1 of 1138 vehicles, 0.12 s of 352 s; none without teleports).
        ``tests/test_backlog.py`` checks the number against ``metrics.episode_metrics``.
        """
        sim = self.sim
        get = sim.simulation.getParameter
        finished = int(float(get("", "device.tripinfo.count")))
        fin_sum = finished * (float(get("", "device.tripinfo.timeLoss")) + float(get("", "device.tripinfo.departDelay")))
        veh = sim.vehicle
        running = veh.getIDList()
        run_sum = sum(veh.getTimeLoss(v) + veh.getDepartDelay(v) for v in running)
        waits = [veh.getDepartDelay(v) for v in sim.simulation.getPendingVehicles()]
        return {
            "mean_delay": honest_mean_delay(fin_sum + run_sum, finished + len(running), waits),
            "vehicles": float(finished + len(running) + len(waits)),
            "never_inserted": float(len(waits)),
        }

    def episode_stats(self) -> dict[str, float]:
        """System metrics of the episode so far, from the live simulation (no tripinfo file needed);
        the info every agent gets at the episode's end (the trainer's curve reads ``mean_delay``).

        ``mean_delay`` is the honest delay (``honest_delay``: every vehicle due to depart, the
        never-inserted ones charged their wait), the same definition as evaluation's
        ``metrics.episode_metrics``, so a policy that keeps vehicles out of the network cannot look
        better in training than it is. ``mean_trip_delay`` averages timeLoss + departDelay over the
        finished trips only (kept for comparison: blind to vehicles that never got in).
        """
        get = self.sim.simulation.getParameter
        n = float(get("", "device.tripinfo.count"))
        return {
            "sim_time": self.sim_time,
            **self.honest_delay(),
            "mean_trip_delay": float(get("", "device.tripinfo.timeLoss")) + float(get("", "device.tripinfo.departDelay")),
            "mean_trip_waiting_time": float(get("", "device.tripinfo.waitingTime")),
            "arrived": n,
            "inserted": float(get("", "stats.vehicles.inserted")),
            "waiting_to_insert": float(get("", "stats.vehicles.waiting")),
            "teleports": float(get("", "stats.teleports.total")),
        }

    @functools.cached_property
    def neighbours(self) -> dict[str, list[str]]:
        """Agents joined by a road: one's outgoing edge is the other's incoming edge."""
        edge = lambda ln: ln.rsplit("_", 1)[0]  # noqa: E731
        ins = {a: {edge(ln) for ln in t.in_lanes} for a, t in self.topologies.items() if a in self.signals}
        outs = {a: {edge(ln) for ln in t.out_lanes} for a, t in self.topologies.items() if a in self.signals}
        return {a: sorted(b for b in ins if b != a and (outs[a] & ins[b] or outs[b] & ins[a])) for a in ins}

    # ------------------------------------------------------------------ helpers for experts / text
    def accumulated_waiting_time(self, veh: str) -> float:
        return self.sim.vehicle.getAccumulatedWaitingTime(veh)

    def phase_pressures(self, ts: TrafficSignal) -> np.ndarray:
        veh = self.lanes.veh
        return np.array([veh[i].sum() - veh[o].sum() for i, o in zip(ts.phase_link_in_idx, ts.phase_link_out_idx)])

    def phase_queues(self, ts: TrafficSignal) -> np.ndarray:
        halt = self.lanes.halt
        return np.array([halt[i].sum() for i in ts.phase_lane_idx])

    def legal_actions(self, agent: str) -> tuple[int, ...]:
        return self.signals[agent].legal_actions(self.sim_time)

    def intersection_state(self, agent: str) -> IntersectionState:
        ts = self.signals[agent]
        topo = ts.topo
        pressures = self.phase_pressures(ts)
        queues = self.phase_queues(ts)
        phases = tuple(
            PhaseInfo(i, g, topo.movements[i] if topo.movements else (), int(queues[i]), float(pressures[i]))
            for i, g in enumerate(topo.greens)
        )
        approaches = []
        idx = self.lanes.index
        for street, direction, lanes in topo.approaches:
            ids = [idx[ln] for ln in lanes]
            halted = int(self.lanes.halt[ids].sum())
            total = int(self.lanes.veh[ids].sum())
            wait = 0.0
            if self.lanes.with_vehicle_ids:
                wait = sum(self.accumulated_waiting_time(v) for i in ids for v in self.lanes.vehicles(i))
            approaches.append(ApproachState(street, direction, halted, total - halted, round(wait, 1), len(lanes)))
        return IntersectionState(
            agent_id=agent, name=topo.name, time=self.sim_time, phases=phases, approaches=tuple(approaches),
            current_phase=ts.green_phase, time_in_phase=self.sim_time - ts.last_change,
            min_green=float(ts.min_green), max_green=float(ts.max_green),
            legal_actions=ts.legal_actions(self.sim_time), is_yellow=ts.is_yellow,
        )

    def describe(self) -> dict[str, Any]:
        return {"scenario": self.scenario.to_json(), "config": {k: (v if isinstance(v, (int, float, str, bool, type(None), tuple, list)) else repr(v)) for k, v in asdict(self.config).items()}}


def make_env(city: str | Scenario, **options: Any) -> LeedTrafficEnv:
    """Build the city's scenario if needed and return its environment.

    ``options`` are ``EnvConfig`` fields (``delta_time``, ``yellow_time``, ``min_green``,
    ``seconds``, ``reward``, ``observation``, ``seed``, ...).
    """
    fields = EnvConfig.__dataclass_fields__
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise UserError(f"Unknown environment option(s) {', '.join(unknown)}; valid: {', '.join(fields)}.")
    scenario = city if isinstance(city, Scenario) else build_scenario(city)
    return LeedTrafficEnv(scenario, EnvConfig(**options))


def play_episode(
    env: LeedTrafficEnv,
    seed: int,
    act: Callable[[dict[str, np.ndarray]], dict[str, int]] | None,
    after_step: Callable[[dict[str, int], dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """The one episode loop: ``reset(seed)``, then ``step(act(obs))`` until the episode ends, then
    ``close()`` (a later ``reset`` starts a fresh simulation anyway).

    ``act`` maps the agents' observations to their actions; ``after_step(actions, rewards)`` sees
    each transition (the demonstrations record trajectories with it). Without ``act``, or without
    agents (the lights run their own programs: ``control=False``), the simulation runs to the end
    with no decisions. Used by ``evaluate.run_episode`` (metrics of any controller) and
    ``demos.run_episode`` (per-agent trajectories). Returns the info of the last step (one agent's;
    every agent gets the episode-end statistics, e.g. the honest ``mean_delay``), {} without decisions.
    """
    infos: dict[str, dict[str, Any]] = {}
    try:
        obs, _ = env.reset(seed=seed)
        if act is None or not env.possible_agents:
            env.run_to_end()
            return {}
        while env.agents:
            actions = act(obs)
            obs, rewards, _, _, infos = env.step(actions)
            if after_step is not None:
                after_step(actions, rewards)
    finally:
        env.close()
    return next(iter(infos.values()), {})  # each agent's info is its own dict (``step``)


__all__ = ["EnvConfig", "LeedTrafficEnv", "make_env", "play_episode"]
