"""One controlled intersection: its green phases, yellow transitions, lanes and movements.

Phase logic follows sumo-rl 1.4.5 exactly (so observations and rewards match it step for step):
green phases are the program's phases with a G/g and no y; switching from green i to green j
shows a yellow state (G/g -> y where j has r/s) for ``yellow_time`` seconds; a request to switch
before ``yellow_time + min_green`` seconds since the last change holds the current phase. Two
differences, both for real OSM programs: duplicate green states are dropped (each action must
mean something), and the agent's program is installed under a new programID (``leed``) instead
of overwriting program "0", which hangs sumo-rl under libsumo on actuated lights. An optional
all-red clearance (``all_red_time``, default 0 as in sumo-rl) follows the yellow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from leed_traffic.network import green_states
from leed_traffic.state import Movement

PROGRAM_ID = "leed"
LONG = 10**6  # phase duration the agent program never reaches: only the agent switches phases
MIN_GAP = 2.5  # SUMO's default minGap, used by sumo-rl's lane capacity


def yellow_state(src: str, dst: str) -> str:
    return "".join("y" if a in "Gg" and b in "rs" else a for a, b in zip(src, dst))


def red_state(src: str, dst: str) -> str:
    return "".join("r" if a in "Gg" and b in "rs" else a for a, b in zip(src, dst))


def compass(angle_deg: float) -> str:
    """Direction vehicles come FROM, given the heading (SUMO angle: 0 = north, clockwise) they drive."""
    names = ["north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west"]
    came_from = (angle_deg + 180.0) % 360.0
    return names[int(((came_from + 22.5) % 360) // 45)]


TURNS = {"s": "through", "l": "left", "L": "left", "r": "right", "R": "right", "t": "u-turn"}


@dataclass
class SignalTopology:
    """Static facts about an intersection, read once from the network."""

    id: str
    greens: list[str]
    in_lanes: list[str]
    out_lanes: list[str]
    links: list[tuple[str, str]]
    """(incoming lane, outgoing lane) per signal index (sumo link index)."""
    lane_length: dict[str, float]
    name: str = ""
    movements: list[tuple[Movement, ...]] = field(default_factory=list)
    """Per green phase, the movements it serves."""
    approaches: list[tuple[str, str, list[str]]] = field(default_factory=list)
    """(street, direction, lanes) per incoming edge."""
    in_edges: list[str] = field(default_factory=list)
    """Incoming edge ids, in the order of ``approaches`` (the insertion backlog is counted per edge)."""

    def phase_links(self, phase: int) -> list[tuple[str, str]]:
        """(incoming lane, outgoing lane) of every link green (G or g) in green phase ``phase``."""
        g = self.greens[phase]
        return [(li, lo) for k, (li, lo) in enumerate(self.links) if li and k < len(g) and g[k] in "Gg"]


def read_topology(sim, net, tls_id: str, program_phases: list[str]) -> SignalTopology:
    """Collect lanes and links through ``sim``'s TraCI API, and street names / turns from sumolib's
    network ``net``. The env passes ``env._NetView``, which answers that API from the same cached
    network (``netfile.read_net``), so the topology is read without starting a simulation."""
    greens = green_states(program_phases)
    in_lanes = list(dict.fromkeys(sim.trafficlight.getControlledLanes(tls_id)))
    links: list[tuple[str, str]] = []
    for link in sim.trafficlight.getControlledLinks(tls_id):
        links.append((link[0][0], link[0][1]) if link else ("", ""))
    out_lanes = list(dict.fromkeys(o for _, o in links if o))
    in_edges = list(dict.fromkeys(ln.rsplit("_", 1)[0] for ln in in_lanes))  # SUMO lane id: <edge>_<index>
    lane_length = {ln: sim.lane.getLength(ln) for ln in in_lanes + out_lanes}

    movements: list[tuple[Movement, ...]] = []
    approaches: list[tuple[str, str, list[str]]] = []
    name = tls_id
    if net is not None:
        def street(edge) -> str:
            return edge.getName() or edge.getID()

        lane_dir: dict[tuple[str, str], str] = {}
        for conns in net.getTLS(tls_id).getConnections():
            in_lane, out_lane, _idx = conns
            for c in in_lane.getOutgoing():
                if c.getToLane() is out_lane:
                    lane_dir[(in_lane.getID(), out_lane.getID())] = c.getDirection()
        edges: dict[str, list[str]] = {}
        for ln in in_lanes:
            edges.setdefault(net.getLane(ln).getEdge().getID(), []).append(ln)
        in_edges = list(edges)
        for eid, lanes in edges.items():
            e = net.getEdge(eid)
            shape = e.getShape()
            (x0, y0), (x1, y1) = shape[-2], shape[-1]
            heading = math.degrees(math.atan2(x1 - x0, y1 - y0)) % 360
            approaches.append((street(e), compass(heading), lanes))
        approach_dir = {ln: d for _, d, lanes in approaches for ln in lanes}
        for g in greens:
            seen: dict[tuple[str, str, str], Movement] = {}
            for idx, (li, lo) in enumerate(links):
                if not li or idx >= len(g) or g[idx] not in "Gg":
                    continue
                fe, te = net.getLane(li).getEdge(), net.getLane(lo).getEdge()
                turn = TURNS.get(lane_dir.get((li, lo), "s"), "through")
                key = (fe.getID(), te.getID(), turn)
                prot = g[idx] == "G" or seen.get(key, Movement("", "", "", "", False)).protected
                seen[key] = Movement(street(fe), approach_dir.get(li, ""), street(te), turn, prot)
            movements.append(tuple(sorted(seen.values(), key=lambda m: (m.from_direction, m.from_street, m.turn, m.to_street))))
        names = list(dict.fromkeys(a[0] for a in approaches if a[0] and not a[0].startswith(("-", ":"))))
        name = " / ".join(sorted(set(names), key=names.index)[:3]) or tls_id
    return SignalTopology(tls_id, greens, in_lanes, out_lanes, links, lane_length, name, movements, approaches,
                          in_edges)


class TrafficSignal:
    """Phase state machine of one agent (sumo-rl semantics, see module docstring)."""

    def __init__(self, sim, topo: SignalTopology, *, yellow_time: int, min_green: int,
                 max_green: int, all_red_time: int = 0, enforce_max_green: bool = False) -> None:
        self.sim = sim
        self.id = topo.id
        self.topo = topo
        self.yellow_time = yellow_time
        self.all_red_time = all_red_time
        self.min_green = min_green
        self.max_green = max_green
        self.enforce_max_green = enforce_max_green
        self.num_green_phases = len(topo.greens)
        self.green_phase = 0
        self.is_yellow = False
        self.last_change = 0.0
        self.switch_to_green_at: float | None = None
        self.last_measure = 0.0
        # program: greens, then per ordered pair (i, j) a yellow (and optionally an all-red) state
        states = list(topo.greens)
        self.transition: dict[tuple[int, int], tuple[int, int | None]] = {}
        for i, gi in enumerate(topo.greens):
            for j, gj in enumerate(topo.greens):
                if i == j:
                    continue
                y = len(states)
                states.append(yellow_state(gi, gj))
                r = None
                if all_red_time > 0:
                    r = len(states)
                    states.append(red_state(gi, gj))
                self.transition[(i, j)] = (y, r)
        self.states = states
        # index arrays into the environment's lane table (filled by the env)
        self.in_idx = np.zeros(0, dtype=np.int64)
        self.out_idx = np.zeros(0, dtype=np.int64)
        self.backlog_idx = np.zeros(0, dtype=np.int64)
        """Slots of this agent's incoming edges in the env's insertion backlog (``env.InsertionBacklog``)."""
        self.phase_lane_idx: list[np.ndarray] = []
        self.phase_link_in_idx: list[np.ndarray] = []
        self.phase_link_out_idx: list[np.ndarray] = []

    def install(self, now: float) -> None:
        tl = self.sim.trafficlight
        phases = [tl.Phase(LONG, s) for s in self.states]
        tl.setProgramLogic(self.id, tl.Logic(PROGRAM_ID, 0, 0, phases))
        tl.setProgram(self.id, PROGRAM_ID)
        tl.setPhase(self.id, 0)
        self.green_phase = 0
        self.is_yellow = False
        self.last_change = now
        self.switch_to_green_at = None
        self.last_measure = 0.0

    def time_since_change(self, now: float) -> float:
        return now - self.last_change

    def can_switch(self, now: float) -> bool:
        return self.time_since_change(now) >= self.yellow_time + self.all_red_time + self.min_green

    def legal_actions(self, now: float) -> tuple[int, ...]:
        if not self.can_switch(now):
            return (self.green_phase,)
        if self.enforce_max_green and self.time_since_change(now) >= self.max_green + self.yellow_time:
            return tuple(i for i in range(self.num_green_phases) if i != self.green_phase)
        return tuple(range(self.num_green_phases))

    def set_next_phase(self, new_phase: int, now: float) -> bool:
        """Apply an action at a decision point; returns True if it starts a phase change."""
        new_phase = int(new_phase)
        if not self.enforce_max_green:
            # the common cases without building the legal actions (same outcome as below: the
            # current green is always legal here, and before min green it is the only one)
            if new_phase == self.green_phase:
                return False
            if not now - self.last_change >= self.yellow_time + self.all_red_time + self.min_green:
                return False
        legal = self.legal_actions(now)
        if new_phase not in legal:
            if self.green_phase in legal:
                new_phase = self.green_phase
            else:  # max green reached: force the next phase in cycle order
                new_phase = (self.green_phase + 1) % self.num_green_phases
        if new_phase == self.green_phase:
            return False
        y, r = self.transition[(self.green_phase, new_phase)]
        self.sim.trafficlight.setPhase(self.id, y)
        self._pending = (r, new_phase)
        self.green_phase = new_phase
        self.is_yellow = True
        self.last_change = now
        self.switch_to_green_at = now + self.yellow_time + self.all_red_time
        return True

    def on_time(self, now: float) -> None:
        """Called when the simulation reaches a transition boundary."""
        if not self.is_yellow:
            return
        r, g = self._pending
        if r is not None and now == self.last_change + self.yellow_time and now < self.switch_to_green_at:
            self.sim.trafficlight.setPhase(self.id, r)
        if now >= self.switch_to_green_at:
            self.sim.trafficlight.setPhase(self.id, g)
            self.is_yellow = False
            self.switch_to_green_at = None
