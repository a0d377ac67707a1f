"""Structured state of one intersection at one decision point.

This is the contract between the environment (which fills it from SUMO) and everything that
reasons about an intersection in words or rules: the LLM demonstrators render it as text, the
reference experts (max-pressure, longest-queue) read its numbers. Frozen and made of tuples so
that it hashes, compares and renders deterministically (same state -> same prompt -> cache hit).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Movement:
    """One movement a green phase serves: from an approach to an exit."""

    from_street: str
    """OSM street name of the incoming edge ("" when unnamed; renderers fall back to the edge id)."""
    from_direction: str
    """Compass side the vehicles come from: "north", "north-east", ..., "west"."""
    to_street: str
    turn: str
    """"through", "left", "right" or "u-turn" (from sumolib's connection direction)."""
    protected: bool = True
    """False for a permissive green ('g': yields to conflicting traffic)."""


@dataclass(frozen=True)
class PhaseInfo:
    """A selectable green phase; ``index`` is the agent's action."""

    index: int
    state: str
    """SUMO signal state string of the green phase, e.g. "GGrrGGrr"."""
    movements: tuple[Movement, ...]
    queue: int = 0
    """Halting vehicles on the lanes this phase gives green to (longest-queue expert)."""
    pressure: float = 0.0
    """Sum over its links of (vehicles on incoming lane - vehicles on outgoing lane) (max-pressure)."""


@dataclass(frozen=True)
class ApproachState:
    """Traffic on one incoming road (all its lanes together)."""

    street: str
    direction: str
    queued: int
    """Halting vehicles (speed < 0.1 m/s)."""
    approaching: int
    """Moving vehicles on the approach."""
    waiting_time: float
    """Accumulated waiting time of the vehicles on the approach, seconds."""
    lanes: int = 1


@dataclass(frozen=True)
class IntersectionState:
    agent_id: str
    name: str
    """Human name from the OSM streets that meet there, e.g. "Mannerheimintie / Kaivokatu"."""
    time: float
    """Simulation time, seconds."""
    phases: tuple[PhaseInfo, ...]
    approaches: tuple[ApproachState, ...]
    current_phase: int
    """Index of the green phase currently shown (or being switched to, during yellow)."""
    time_in_phase: float
    """Seconds since the last phase change (yellow included)."""
    min_green: float
    max_green: float
    legal_actions: tuple[int, ...]
    """Actions that take effect now; before min green only the current phase is legal."""
    is_yellow: bool = False
