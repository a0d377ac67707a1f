"""Intersection states as the text a traffic engineer reads, and the prompts built from it.

Rendering is deterministic (same state -> same text) because the text is the cache key:
identical situations are asked once and re-runs are free and reproducible. Simulation time is
left out on purpose (it is not decision-relevant and would defeat the cache).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from leed_traffic.state import IntersectionState, Movement, PhaseInfo

PROMPT_VERSION = "leed-text-v1"
"""Bump whenever the wording of the system prompt or the rendering changes: it is part of the
cache key, so old answers to differently worded questions are never reused."""

SYSTEM_PROMPT = """\
You are an experienced traffic engineer operating the traffic signals of a city in real time.
For every intersection you are given: its streets, each selectable green phase with the movements
it serves (from which approach, to which street, through/left/right; "yields" marks a permissive
green that gives way to conflicting traffic), the traffic on each approach right now (vehicles
queued = stopped, vehicles approaching = moving towards the stop line, and the waiting time they
have accumulated), the phase currently shown and how long it has been green, and the minimum and
maximum green times. Only the phases listed as legal now can be chosen: before minimum green only
the current phase is legal. Choosing a different phase inserts a short yellow; keeping the current
phase extends its green.

Goal: minimise the total waiting time of all vehicles. Serve long queues and long waits, do not
switch away from a phase that is still discharging a queue, do not keep a green for an empty
approach while others wait, and never let a green run far past its maximum while others wait.
If feedback from a previous round is given for an intersection, use it to correct your policy.

Answer for every intersection with exactly one legal phase number and a short reason (at most
15 words)."""

_UNNAMED = "unnamed road"


def _street(name: str) -> str:
    return name.strip() or _UNNAMED


def _fmt_s(seconds: float) -> str:
    return f"{int(round(seconds))} s"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe_movements(movements: Sequence[Movement]) -> str:
    """Movements grouped by approach: "from X (north) → Y through, → Z left (yields); ..."."""
    groups: dict[tuple[str, str], list[str]] = {}
    for m in movements:
        turn = m.turn + ("" if m.protected else " (yields)")
        groups.setdefault((_street(m.from_street), m.from_direction), []).append(
            f"→ {_street(m.to_street)} {turn}"
        )
    parts = []
    for (street, direction), moves in groups.items():
        seen: list[str] = []
        for mv in moves:  # parallel lanes repeat the same movement; say it once
            if mv not in seen:
                seen.append(mv)
        parts.append(f"from {street} ({direction}) " + ", ".join(seen))
    return "; ".join(parts) if parts else "no movements"


def describe_phase(phase: PhaseInfo) -> str:
    return f"Phase {phase.index}: {describe_movements(phase.movements)} [{phase.queue} queued on its lanes]"


def render_state(state: IntersectionState, feedback: str | None = None) -> str:
    """Full text of one intersection at one decision point (the claude/openai prompt unit)."""
    lines = [f"Intersection {state.agent_id}: {state.name or _UNNAMED}"]
    lines.append("Green phases:")
    lines += [f"- {describe_phase(p)}" for p in state.phases]
    lines.append("Traffic per approach:")
    if state.approaches:
        for a in state.approaches:
            lanes = f", {_plural(a.lanes, 'lane')}" if a.lanes != 1 else ""
            lines.append(
                f"- from {_street(a.street)} ({a.direction}{lanes}): {a.queued} queued, "
                f"{a.approaching} approaching, waiting {_fmt_s(a.waiting_time)}"
            )
    else:
        lines.append("- no incoming traffic data")
    status = "switching (yellow) to" if state.is_yellow else "showing"
    lines.append(
        f"Now {status} phase {state.current_phase} for {_fmt_s(state.time_in_phase)}; "
        f"min green {_fmt_s(state.min_green)}, max green {_fmt_s(state.max_green)}."
    )
    legal = ", ".join(str(a) for a in state.legal_actions)
    if len(state.legal_actions) == 1:
        lines.append(f"Legal now: only phase {legal} (a change is not allowed yet).")
    else:
        lines.append(f"Legal now: phases {legal}.")
    if feedback:
        lines.append(f"Feedback from the previous round: {feedback.strip()}")
    return "\n".join(lines)


def render_batch(
    states: Sequence[IntersectionState],
    feedback: Mapping[str, str] | None = None,
    texts: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
) -> str:
    """One user message asking for a decision at each of many intersections (one request for a city).

    ``texts`` lets the caller pass already-rendered states (the cache keys) so the prompt and the
    cache agree byte for byte. ``keys`` are the names the answer schema expects per intersection;
    where one is not the intersection id (an id too long or unusual for a schema property name)
    the block says which key to answer under.
    """
    feedback = feedback or {}
    if texts is None:
        texts = [render_state(s, feedback.get(s.agent_id)) for s in states]
    head = (
        f"Decide the next green phase at each of these {len(states)} intersections. "
        "Return one decision per intersection, keyed by its id.\n"
    )
    blocks = []
    for i, (s, t) in enumerate(zip(states, texts)):
        block = f"### {i + 1}.\n{t}"
        if keys is not None and keys[i] != s.agent_id:
            block += f'\nAnswer for this intersection under the key "{keys[i]}".'
        blocks.append(block)
    return head + "\n\n".join(blocks)
