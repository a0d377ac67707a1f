"""Claude as demonstrator, through the official ``anthropic`` SDK.

One request decides many intersections (a whole city per decision step when it fits in
``max_batch``), via a forced tool call whose input schema enumerates the intersections of the
request, each with the phases legal now (see :mod:`.http`; Claude does not decode under the
schema, but it reads the legal answers in it, and anything else still counts invalid). The system
prompt carries ``cache_control``; note that Anthropic's cache prefix is tools then system, so
with a per-request tool schema the prefix is reused only by identical requests. Retries, key
scrubbing, accounting and parsing are :class:`HTTPDemonstrator`'s.

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

from .base import DemonstratorUnavailable
from .cache import AnswerCache
from .http import HTTPConfig, HTTPDemonstrator, Usage
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

MISSING_KEY = (
    "The claude demonstrator needs ANTHROPIC_API_KEY set to an Anthropic API key; "
    "without one use --llm local, max-pressure, longest-queue or openai."
)


@dataclass
class ClaudeConfig(HTTPConfig):
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    """Defaults to ANTHROPIC_BASE_URL, then the public API (the SDK's resolution)."""
    prices: dict[str, tuple[float, float, float, float]] = field(
        default_factory=lambda: dict(PRICES_PER_MTOK)
    )


class ClaudeDemonstrator(HTTPDemonstrator):
    backend = "claude"
    key_var = "ANTHROPIC_API_KEY"

    def __init__(
        self,
        config: ClaudeConfig | None = None,
        cache: AnswerCache | None = None,
        api_key: str | None = None,
        http_client: Any = None,
        sleep: Any = time.sleep,
    ) -> None:
        config = config or ClaudeConfig()
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise DemonstratorUnavailable(MISSING_KEY)
        base_url = config.base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        super().__init__(config, cache, api_key=key, base_url=base_url, sleep=sleep)
        self.config: ClaudeConfig = config
        self.name = "claude"
        self.model = config.model
        if config.model not in config.prices:
            log.warning("no price known for %s: cost is reported as 0", config.model)
        import anthropic

        self._client = anthropic.Anthropic(**self._client_options(key, http_client))

    def _sdk_errors(self):
        import anthropic

        return anthropic.APIConnectionError, anthropic.APIStatusError, anthropic.APIError

    def _send(
        self,
        states: Sequence[IntersectionState],
        texts: Sequence[str],
        keys: Sequence[str],
        schema: dict[str, Any],
        max_tokens: int,
    ) -> Any:
        return self._client.messages.create(
            model=self.config.model,
            max_tokens=max_tokens,
            system=[{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}],
            tools=[
                {
                    "name": TOOL_NAME,
                    "description": "Set the next green phase of each intersection: under its id, "
                    "one of its phases legal now and a short reason.",
                    "input_schema": schema,
                }
            ],
            tool_choice={"type": "tool", "name": TOOL_NAME},
            messages=[{"role": "user", "content": render_batch(states, texts=texts, keys=keys)}],
        )

    def _payload(self, reply: Any) -> Any:
        """The input of the (first) forced tool call; None when the model did not call it."""
        for block in getattr(reply, "content", None) or []:
            if getattr(block, "type", None) == "tool_use" and getattr(block, "name", None) == TOOL_NAME:
                return getattr(block, "input", None)
        return None

    def _usage(self, reply: Any) -> Usage | None:
        u = getattr(reply, "usage", None)
        if u is None:
            return None
        return Usage(
            input_tokens=int(getattr(u, "input_tokens", 0) or 0),
            output_tokens=int(getattr(u, "output_tokens", 0) or 0),
            cached_tokens=int(getattr(u, "cache_read_input_tokens", 0) or 0),
            cache_write_tokens=int(getattr(u, "cache_creation_input_tokens", 0) or 0),
        )

    def _cost(self, usage: Usage) -> float:
        p = self.config.prices.get(self.config.model)
        if not p:
            return 0.0
        return (
            usage.input_tokens * p[0]
            + usage.output_tokens * p[1]
            + usage.cache_write_tokens * p[2]
            + usage.cached_tokens * p[3]
        ) / 1e6
