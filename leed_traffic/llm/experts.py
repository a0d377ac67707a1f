"""Rule-based reference experts behind the demonstrator interface -- not LLMs, labelled so.

They answer "how much does LEED gain from a good demonstrator?" and give offline demonstrations
worth learning from when no LLM is available. Both choose among the legal phases only, so every
answer is valid; ties keep the current phase (no needless yellow).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from leed_traffic.state import IntersectionState, PhaseInfo

from .base import Decision, Demonstrator


def _argmax_keep_current(
    state: IntersectionState, score: Callable[[PhaseInfo], float]
) -> tuple[int, float]:
    by_index = {p.index: p for p in state.phases}
    legal = [a for a in state.legal_actions if a in by_index]
    if not legal:  # no phase info: hold (legal by construction)
        return state.current_phase, 0.0
    best = max(score(by_index[a]) for a in legal)
    if state.current_phase in legal and score(by_index[state.current_phase]) >= best:
        return state.current_phase, best
    return min(a for a in legal if score(by_index[a]) >= best), best


class _RuleExpert(Demonstrator):
    is_llm = False
    metric = ""

    def _score(self, p: PhaseInfo) -> float:
        raise NotImplementedError

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
            phase, value = _argmax_keep_current(s, self._score)
            verb = "keep" if phase == s.current_phase else "switch to"
            out.append(Decision(phase, f"{verb} phase {phase}: largest {self.metric} ({value:g})", True))
        return out


class MaxPressure(_RuleExpert):
    """Max-pressure control (Varaiya 2013): serve the phase with the largest upstream-downstream
    vehicle difference; throughput-optimal under idealised assumptions."""

    name = "max-pressure"
    model = "rule:max-pressure"
    metric = "pressure"

    def _score(self, p: PhaseInfo) -> float:
        return float(p.pressure)


class LongestQueue(_RuleExpert):
    """Serve the phase with the most halting vehicles on its green lanes."""

    name = "longest-queue"
    model = "rule:longest-queue"
    metric = "queue"

    def _score(self, p: PhaseInfo) -> float:
        return float(p.queue)
