"""Rule-based reference experts behind the demonstrator interface -- not LLMs, labelled so.

They answer "how much does LEED gain from a good demonstrator?" and give offline demonstrations
worth learning from when no LLM is available. The rules are ``leed_traffic.rules``' (the same
scores and choice as the classical ``max-pressure`` / ``greedy`` controllers), applied to the legal
phases only, so every answer is valid; ties keep the current phase (no needless yellow).

``random`` is the opposite reference: a uniformly random legal phase at every decision, the worst
case a demonstrator can be without being adversarial (tests and benchmarks of the expert gate,
issue 12: LEED must not fall below IPPO however bad its demonstrations are).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from leed_traffic.rules import METRICS, choose_phase, state_scores
from leed_traffic.state import IntersectionState

from .base import Decision, Demonstrator


class _RuleExpert(Demonstrator):
    is_llm = False
    metric = ""
    """The per-phase number the rule maximises: "pressure" or "queue" (``rules.METRICS``)."""

    def decide(
        self,
        states: Sequence[IntersectionState],
        feedback: Mapping[str, str] | None = None,
    ) -> list[Decision]:
        out = []
        for s in states:
            self.stats.decisions += 1
            if len(s.legal_actions) == 1:
                self.stats.forced += 1
                out.append(Decision(s.legal_actions[0], "only legal phase", True))
                continue
            out.append(self._choose(s))
        return out

    def _choose(self, s: IntersectionState) -> Decision:
        # legal phases only (no phase info at all: hold, legal by construction)
        phase, value = choose_phase(state_scores(s, self.metric), s.current_phase, legal=s.legal_actions)
        verb = "keep" if phase == s.current_phase else "switch to"
        return Decision(phase, f"{verb} phase {phase}: largest {self.metric} ({value:g})", True)


class MaxPressure(_RuleExpert):
    """Max-pressure control (Varaiya 2013): serve the phase with the largest upstream-downstream
    vehicle difference; throughput-optimal under idealised assumptions."""

    name = "max-pressure"
    model = "rule:max-pressure"
    metric = METRICS["max-pressure"]


class LongestQueue(_RuleExpert):
    """Serve the phase with the most halting vehicles on its green lanes."""

    name = "longest-queue"
    model = "rule:longest-queue"
    metric = METRICS["longest-queue"]


class RandomExpert(_RuleExpert):
    """A uniformly random legal phase at every decision (the worst-case reference demonstrator).

    Seeded: one ``numpy`` generator draws the decisions in the order they are asked, so the same
    seed asked the same states in the same order gives the same answers (a generation run is
    reproducible; its rounds differ because the draws continue). A single legal phase is forced
    and draws nothing."""

    name = "random"
    model = "rule:random"
    is_llm = False

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)

    def _choose(self, s: IntersectionState) -> Decision:
        legal = list(s.legal_actions) or [s.current_phase]  # no legal phase listed: hold
        phase = int(legal[int(self.rng.integers(len(legal)))])
        return Decision(phase, f"uniformly random among legal phases {legal}", True)
