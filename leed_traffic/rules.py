"""The rule-based phase choices, written once: max pressure and longest queue.

Two families of callers use them:

- the classical controllers ``controllers.MaxPressure`` / ``controllers.Greedy`` (evaluation
  through the env, ``leed-traffic evaluate``), which score with :func:`env_scores`;
- the reference experts ``llm.experts.MaxPressure`` / ``llm.experts.LongestQueue``
  (demonstrations through the demonstrator interface), which score with :func:`state_scores`.

Both scores are the env's ``phase_pressures`` / ``phase_queues`` (an ``IntersectionState``'s
``PhaseInfo.pressure`` and ``.queue`` are filled from them), and both callers choose with
:func:`choose_phase`. They differ in one respect only, and on purpose (see ``choose_phase``'s
``legal``): the controllers choose among all green phases and leave legality to the env, the
experts choose among the legal phases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from leed_traffic.env import LeedTrafficEnv
    from leed_traffic.signal import TrafficSignal
    from leed_traffic.state import IntersectionState

METRICS = {"max-pressure": "pressure", "longest-queue": "queue"}
"""Rule name -> the per-phase number it maximises."""


def env_scores(env: "LeedTrafficEnv", ts: "TrafficSignal", metric: str) -> np.ndarray:
    """Per green phase of ``ts``: its pressure (sum over its green links of vehicles on the
    incoming lane minus vehicles on the outgoing lane) or its queue (halted vehicles on its green
    lanes), from the env's lane table."""
    if metric == "pressure":
        return env.phase_pressures(ts)
    if metric == "queue":
        return env.phase_queues(ts)
    raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS.values())}")


def state_scores(state: "IntersectionState", metric: str) -> dict[int, float]:
    """The same numbers read from an intersection state: phase index -> score."""
    if metric not in ("pressure", "queue"):
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS.values())}")
    return {p.index: float(getattr(p, metric)) for p in state.phases}


def choose_phase(
    scores: Sequence[float] | Mapping[int, float],
    current: int,
    legal: Iterable[int] | None = None,
) -> tuple[int, float]:
    """``(phase, best score)``: the candidate phase with the largest score.

    Ties keep the current phase when it is a candidate (no needless yellow); otherwise the
    lowest-numbered phase with the best score wins.

    Candidates are the phases with a score (``scores`` as a sequence: phase ``i`` scores
    ``scores[i]``), restricted to ``legal`` when it is given:

    - ``legal=None`` (``controllers.MaxPressure`` / ``Greedy``): every green phase, legal or
      not; the env's ``TrafficSignal.set_next_phase`` then holds the phase before min green and,
      under ``enforce_max_green``, replaces a held phase by the next one in cycle order. This is
      how these controllers have always been evaluated (the "(max green)" rows included).
    - ``legal=state.legal_actions`` (``llm.experts``): only phases that take effect now, so every
      demonstrated answer is valid (a demonstration must never count as invalid).

    With no candidate at all it returns ``(current, 0.0)``: hold.
    """
    items = scores if isinstance(scores, Mapping) else dict(enumerate(scores))
    if legal is None:
        cands = list(items)
    else:
        cands = [a for a in legal if a in items]
    if not cands:
        return current, 0.0
    best = max(items[a] for a in cands)
    if current in cands and items[current] >= best:
        return current, best
    return min(a for a in cands if items[a] >= best), best
