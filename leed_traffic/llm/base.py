"""The demonstrator interface: a batch of intersection states -> one legal phase per state.

Every backend (Claude, an OpenAI-compatible server, the embedded model, the rule-based reference
experts) sits behind :class:`Demonstrator`, so the generator, the CLI and the learner never care
which one produced a demonstration. LLM output is data: it is parsed, validated against the
state's legal phases and, when unusable, replaced by "hold the current phase" and counted invalid
-- never a crash.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from leed_traffic.errors import UserError
from leed_traffic.state import IntersectionState

from .cache import AnswerCache
from .text import PROMPT_VERSION, render_state

log = logging.getLogger(__name__)


class DemonstratorUnavailable(UserError, RuntimeError):
    """The backend cannot run here (no API key, no server, missing package); the message says why
    in one sentence and names the alternatives. A UserError: the CLI prints it without a traceback."""


class DemonstratorError(UserError, RuntimeError):
    """A backend failed for good (retries exhausted, key rejected). The round that called it can be
    resumed: answers obtained so far are in the cache."""


@dataclass(frozen=True)
class Decision:
    phase: int
    reason: str = ""
    valid: bool = True
    """False when the answer was malformed, out of range or illegal now (then ``phase`` holds the
    current phase)."""


@dataclass(frozen=True)
class RawAnswer:
    """What a backend returned for one state, before validation. ``phase`` None = unparsable."""

    phase: int | None
    reason: str = ""


@dataclass
class DemonstratorStats:
    decisions: int = 0
    """States answered (forced ones included)."""
    forced: int = 0
    """States with a single legal phase: answered without asking."""
    calls: int = 0
    """Requests to the model (HTTP requests, or local completions)."""
    cache_hits: int = 0
    input_tokens: int = 0
    """Uncached input tokens billed."""
    output_tokens: int = 0
    cached_tokens: int = 0
    """Input tokens served from the provider's prompt cache (or the local KV cache)."""
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    invalid: int = 0
    retries: int = 0
    latency_s: float = 0.0
    """Wall time spent waiting for the model (excludes cache hits)."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def validity(self) -> float:
        return 1.0 - self.invalid / self.decisions if self.decisions else 1.0


def parse_phase(value: object) -> int | None:
    """An integer phase from model output (int or a string of digits); anything else -> None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        v = value.strip().removeprefix("phase").removeprefix("Phase").strip()
        if v.isdigit():
            return int(v)
    return None


def clean_reason(value: object, limit: int = 200) -> str:
    """One printable line, bounded: reasons are stored with the demonstrations."""
    if not isinstance(value, str):
        return ""
    return " ".join(value.split())[:limit]


class Demonstrator(ABC):
    """Chooses one legal green phase for each intersection state."""

    name: str = "demonstrator"
    model: str = ""
    is_llm: bool = True

    def __init__(self) -> None:
        self.stats = DemonstratorStats()

    @abstractmethod
    def decide(
        self,
        states: Sequence[IntersectionState],
        feedback: Mapping[str, str] | None = None,
    ) -> list[Decision]:
        """Exactly one decision per state, in order; ``feedback`` maps agent id -> refinement text."""

    def describe(self) -> str:
        kind = "LLM" if self.is_llm else "reference expert, not an LLM"
        return f"{self.name} ({kind}{', model ' + self.model if self.model else ''})"

    def close(self) -> None:
        """Release clients / model memory."""

    def __enter__(self) -> "Demonstrator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def validate(state: IntersectionState, answer: RawAnswer) -> Decision:
    """Legal answers pass; anything else holds the current phase and is marked invalid."""
    if answer.phase is not None and answer.phase in state.legal_actions:
        return Decision(answer.phase, answer.reason, True)
    why = "unparsable answer" if answer.phase is None else f"phase {answer.phase} not legal now"
    reason = f"invalid ({why}); held phase {state.current_phase}"
    if answer.reason:
        reason += f" | model said: {answer.reason}"
    return Decision(state.current_phase, reason[:300], False)


class LLMDemonstrator(Demonstrator):
    """Shared machinery of the model backends: rendering, forced states, answer cache, validation.

    Subclasses implement :meth:`_ask` (texts of the states that missed the cache -> raw answers)
    and may override :meth:`render` (the text that is both the prompt unit and the cache key).
    """

    backend: str = "llm"
    prompt_version: str = PROMPT_VERSION

    def __init__(self, cache: AnswerCache | None = None) -> None:
        super().__init__()
        self.cache = cache

    def render(self, state: IntersectionState, feedback: str | None) -> str:
        return render_state(state, feedback)

    @abstractmethod
    def _ask(self, states: Sequence[IntersectionState], texts: Sequence[str]) -> list[RawAnswer]:
        """Ask the model about these states (one answer per state, same order)."""

    def decide(
        self,
        states: Sequence[IntersectionState],
        feedback: Mapping[str, str] | None = None,
    ) -> list[Decision]:
        feedback = feedback or {}
        out: list[Decision | None] = [None] * len(states)
        pending: dict[str, list[int]] = {}  # text -> indices (identical states asked once)
        texts: dict[int, str] = {}
        for i, s in enumerate(states):
            self.stats.decisions += 1
            if len(s.legal_actions) == 1:  # nothing to decide: the only legal phase
                self.stats.forced += 1
                out[i] = Decision(s.legal_actions[0], "only legal phase", True)
                continue
            text = self.render(s, feedback.get(s.agent_id))
            texts[i] = text
            if text in pending:
                pending[text].append(i)
                self.stats.cache_hits += 1
                continue
            hit = self.cache.get(self.backend, self.model, self.prompt_version, text) if self.cache is not None else None
            if hit is not None and hit.phase in s.legal_actions:
                self.stats.cache_hits += 1
                out[i] = Decision(hit.phase, hit.reason, True)
            else:
                pending[text] = [i]
        if pending:
            first = [idx[0] for idx in pending.values()]
            t0 = time.perf_counter()
            answers = self._ask([states[i] for i in first], [texts[i] for i in first])
            self.stats.latency_s += time.perf_counter() - t0
            if len(answers) != len(first):  # a backend bug must not shift answers between agents
                raise DemonstratorError(
                    f"{self.name}: {len(answers)} answers for {len(first)} states"
                )
            fresh = []
            for (text, idx), ans in zip(pending.items(), answers):
                for i in idx:
                    d = validate(states[i], ans)
                    out[i] = d
                    if not d.valid:
                        self.stats.invalid += 1
                if out[idx[0]].valid:  # type: ignore[union-attr]
                    fresh.append((text, ans.phase, ans.reason))
            if self.cache is not None and fresh:
                self.cache.put_many(self.backend, self.model, self.prompt_version, fresh)
        return out  # type: ignore[return-value]
