"""Hand-made intersection states for the LLM tests (no SUMO needed)."""

from __future__ import annotations

from leed_traffic.state import ApproachState, IntersectionState, Movement, PhaseInfo


def crossing(
    agent_id: str = "J1",
    queues: tuple[int, int] = (12, 0),
    pressures: tuple[float, float] | None = None,
    current: int = 1,
    time_in_phase: float = 30.0,
    legal: tuple[int, ...] = (0, 1),
) -> IntersectionState:
    """A two-phase crossing of Mannerheimintie (north-south) and Kaivokatu (east-west)."""
    ns = (
        Movement("Mannerheimintie", "north", "Mannerheimintie", "through"),
        Movement("Mannerheimintie", "north", "Kaivokatu", "left", protected=False),
        Movement("Mannerheimintie", "south", "Mannerheimintie", "through"),
        Movement("Mannerheimintie", "south", "Kaivokatu", "right"),
    )
    ew = (
        Movement("Kaivokatu", "east", "Kaivokatu", "through"),
        Movement("Kaivokatu", "east", "Kaivokatu", "through"),  # a second lane: said once
        Movement("", "west", "Mannerheimintie", "right"),
    )
    pressures = pressures if pressures is not None else (float(queues[0]), float(queues[1]))
    phases = (
        PhaseInfo(0, "GGgGGrrrr", ns, queue=queues[0], pressure=pressures[0]),
        PhaseInfo(1, "rrrrrGGGG", ew, queue=queues[1], pressure=pressures[1]),
    )
    approaches = (
        ApproachState("Mannerheimintie", "north", queues[0] // 2 + queues[0] % 2, 3, 41.0, lanes=2),
        ApproachState("Mannerheimintie", "south", queues[0] // 2, 1, 20.4),
        ApproachState("Kaivokatu", "east", queues[1], 0, 0.0),
        ApproachState("", "west", 0, 0, 0.0),
    )
    return IntersectionState(
        agent_id=agent_id,
        name="Mannerheimintie / Kaivokatu",
        time=3600.0,
        phases=phases,
        approaches=approaches,
        current_phase=current,
        time_in_phase=time_in_phase,
        min_green=10.0,
        max_green=60.0,
        legal_actions=legal,
    )
