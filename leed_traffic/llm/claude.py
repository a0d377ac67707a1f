"""Claude as demonstrator, through the official ``anthropic`` SDK.

One request decides many intersections (a whole city per decision step when it fits in
``max_batch``), via a forced tool call whose JSON schema is one ``{intersection, phase, reason}``
per intersection. The system prompt and tool definition form a stable prefix marked with
``cache_control`` so repeated requests read it from Anthropic's prompt cache. Retries with
exponential backoff on 429 / 5xx / 529 overloaded / connection errors are ours (the SDK's own
retries are off) so they are counted and bounded; then a :class:`DemonstratorError` whose message
never contains the key.

Note: this SDK's ``messages.create`` has no ``temperature`` parameter; we do not pass one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from leed_traffic.state import IntersectionState

from .base import (
    DemonstratorUnavailable,
    LLMDemonstrator,
    RawAnswer,
    RetryPolicy,
    call_with_retries,
    clean_reason,
    parse_phase,
)
from .cache import AnswerCache
from .text import SYSTEM_PROMPT, render_batch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-haiku-5-5"

# USD per million tokens: (input, output, 5-minute cache write, cache read). Prompts here stay far
# below Haiku 5.5's 100k-token long-prompt tier. Unknown models are accounted at 0 with a warning.
PRICES_PER_MTOK: dict[str, tuple[float, float, float, float]] = {
    "claude-haiku-5-5": (0.10, 0.50, 0.125, 0.01),
    "claude-haiku-4-5": (1.00, 5.00, 1.25, 0.10),
    "claude-haiku-4-5-20251001": (1.00, 5.00, 1.25, 0.10),
    "claude-sonnet-5-5": (2.00, 10.00, 2.50, 0.10),
    "claude-sonnet-4-5": (3.00, 15.00, 3.75, 0.30),
}

TOOL_NAME = "set_signal_phases"
TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "decisions": {
            "type": "array",
            "description": "One entry per intersection in the request.",
            "items": {
                "type": "object",
                "properties": {
                    "intersection": {"type": "string", "description": "The intersection id."},
                    "phase": {"type": "integer", "description": "A phase legal now."},
                    "reason": {"type": "string", "description": "At most 15 words."},
                },
                "required": ["intersection", "phase", "reason"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["decisions"],
    "additionalProperties": False,
}

MISSING_KEY = (
    "The claude demonstrator needs ANTHROPIC_API_KEY set to an Anthropic API key; "
    "without one use --llm local, max-pressure, longest-queue or openai."
)


@dataclass
class ClaudeConfig:
    model: str = DEFAULT_MODEL
    max_batch: int = 40
    """Intersections per request: helsinki's 35 agents fit in one request per decision step."""
    tokens_per_decision: int = 48
    """Output budget per intersection (JSON + a 15-word reason)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 60.0
    base_url: str | None = None
    """Defaults to ANTHROPIC_BASE_URL, then the public API (the SDK's resolution)."""
    prices: dict[str, tuple[float, float, float, float]] = field(
        default_factory=lambda: dict(PRICES_PER_MTOK)
    )


class ClaudeDemonstrator(LLMDemonstrator):
    backend = "claude"
    is_llm = True

    def __init__(
        self,
        config: ClaudeConfig | None = None,
        cache: AnswerCache | None = None,
        api_key: str | None = None,
        http_client: Any = None,
        sleep: Any = time.sleep,
    ) -> None:
        super().__init__(cache)
        self.config = config or ClaudeConfig()
        self.name = "claude"
        self.model = self.config.model
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise DemonstratorUnavailable(MISSING_KEY)
        self._key = key
        self._sleep = sleep
        if self.config.model not in self.config.prices:
            log.warning("no price known for %s: cost is reported as 0", self.config.model)
        import anthropic

        kwargs: dict[str, Any] = dict(api_key=key, max_retries=0, timeout=self.config.timeout_s)
        base_url = self.config.base_url or os.environ.get("ANTHROPIC_BASE_URL")
        if base_url:
            kwargs["base_url"] = base_url
        if http_client is not None:
            kwargs["http_client"] = http_client
        self._client = anthropic.Anthropic(**kwargs)

    def __repr__(self) -> str:  # never the key
        return f"ClaudeDemonstrator(model={self.model!r})"

    # -- requests -----------------------------------------------------------------------------
    def _ask(self, states: Sequence[IntersectionState], texts: Sequence[str]) -> list[RawAnswer]:
        return self._ask_in_chunks(states, texts, self.config.max_batch, self._ask_chunk)

    def _ask_chunk(self, states: Sequence[IntersectionState], texts: Sequence[str]) -> list[RawAnswer]:
        message = self._create(
            model=self.config.model,
            max_tokens=64 + self.config.tokens_per_decision * len(states),
            system=[{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}],
            tools=[
                {
                    "name": TOOL_NAME,
                    "description": "Set the next green phase of each intersection.",
                    "input_schema": TOOL_SCHEMA,
                }
            ],
            tool_choice={"type": "tool", "name": TOOL_NAME},
            messages=[{"role": "user", "content": render_batch(states, texts=texts)}],
        )
        self._account(message)
        return self._parse(message, states)

    def _create(self, **params: Any) -> Any:
        import anthropic

        return call_with_retries(
            lambda: self._client.messages.create(**params),
            backend="claude",
            policy=self.config.retry,
            stats=self.stats,
            connection_error=anthropic.APIConnectionError,
            status_error=anthropic.APIStatusError,
            base_error=anthropic.APIError,
            secret=self._key,
            sleep=self._sleep,
            key_var="ANTHROPIC_API_KEY",
        )

    def _account(self, message: Any) -> None:
        u = getattr(message, "usage", None)
        if u is None:
            return
        inp = int(getattr(u, "input_tokens", 0) or 0)
        out = int(getattr(u, "output_tokens", 0) or 0)
        write = int(getattr(u, "cache_creation_input_tokens", 0) or 0)
        read = int(getattr(u, "cache_read_input_tokens", 0) or 0)
        self.stats.input_tokens += inp
        self.stats.output_tokens += out
        self.stats.cache_write_tokens += write
        self.stats.cached_tokens += read
        p = self.config.prices.get(self.config.model)
        if p:
            self.stats.cost_usd += (inp * p[0] + out * p[1] + write * p[2] + read * p[3]) / 1e6

    @staticmethod
    def _parse(message: Any, states: Sequence[IntersectionState]) -> list[RawAnswer]:
        """Tool input -> one RawAnswer per state; missing or duplicated ids are unparsable."""
        by_id: dict[str, RawAnswer] = {}
        dup: set[str] = set()
        for block in getattr(message, "content", None) or []:
            if getattr(block, "type", None) != "tool_use" or getattr(block, "name", None) != TOOL_NAME:
                continue
            data = getattr(block, "input", None)
            items = data.get("decisions") if isinstance(data, dict) else None
            if not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue
                aid = str(item.get("intersection", "")).strip()
                if aid in by_id:
                    dup.add(aid)
                by_id[aid] = RawAnswer(parse_phase(item.get("phase")), clean_reason(item.get("reason")))
        out = []
        for s in states:
            if s.agent_id in by_id and s.agent_id not in dup:
                out.append(by_id[s.agent_id])
            else:
                out.append(RawAnswer(None, "no single answer for this intersection"))
        return out

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
