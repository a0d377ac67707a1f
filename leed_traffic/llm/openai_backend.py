"""Any OpenAI-compatible chat server as demonstrator (OpenAI, vLLM, llama.cpp server, Ollama).

Selected by base URL and model name (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``OPENAI_MODEL``
or the config). Structured output through ``response_format`` JSON schema, many intersections per
request, the same system prompt as the Claude backend (servers with automatic prefix caching reuse
it), retries with backoff, token accounting (cost only when a price is configured: self-hosted
servers are free and their model names unknown).
"""

from __future__ import annotations

import json
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
from .claude import TOOL_SCHEMA
from .text import SYSTEM_PROMPT, render_batch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
_NO_KEY = "not-needed"  # self-hosted servers ignore the key but the SDK wants one

MISSING_SERVER = (
    "The openai demonstrator needs OPENAI_BASE_URL (an OpenAI-compatible server such as vLLM, "
    "llama.cpp or Ollama) or OPENAI_API_KEY set; without either use --llm local, max-pressure, "
    "longest-queue or claude."
)


@dataclass
class OpenAIConfig:
    model: str | None = None
    """Model name on the server; defaults to OPENAI_MODEL, then ``gpt-4o-mini``."""
    base_url: str | None = None
    """Defaults to OPENAI_BASE_URL, then the public OpenAI API."""
    max_batch: int = 40
    tokens_per_decision: int = 48
    timeout_s: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    temperature: float | None = 0.0
    """0 for reproducible answers; None omits it (some reasoning models reject the parameter)."""
    price_per_mtok: tuple[float, float] | None = None
    """(input, output) USD per million tokens, if you want a cost for a paid server."""


class OpenAIDemonstrator(LLMDemonstrator):
    backend = "openai"
    is_llm = True

    def __init__(
        self,
        config: OpenAIConfig | None = None,
        cache: AnswerCache | None = None,
        api_key: str | None = None,
        http_client: Any = None,
        sleep: Any = time.sleep,
    ) -> None:
        super().__init__(cache)
        self.config = config or OpenAIConfig()
        base_url = self.config.base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if not base_url and not key:
            raise DemonstratorUnavailable(MISSING_SERVER)
        self._key = key
        self._sleep = sleep
        self.name = "openai"
        self.model = self.config.model or os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
        self.base_url = base_url
        import openai

        kwargs: dict[str, Any] = dict(
            api_key=key or _NO_KEY, max_retries=0, timeout=self.config.timeout_s
        )
        if base_url:
            kwargs["base_url"] = base_url
        if http_client is not None:
            kwargs["http_client"] = http_client
        self._client = openai.OpenAI(**kwargs)

    def __repr__(self) -> str:
        return f"OpenAIDemonstrator(model={self.model!r}, base_url={self.base_url!r})"

    def _ask(self, states: Sequence[IntersectionState], texts: Sequence[str]) -> list[RawAnswer]:
        return self._ask_in_chunks(states, texts, self.config.max_batch, self._ask_chunk)

    def _ask_chunk(self, states: Sequence[IntersectionState], texts: Sequence[str]) -> list[RawAnswer]:
        import openai

        params: dict[str, Any] = dict(
            model=self.model,
            max_tokens=64 + self.config.tokens_per_decision * len(states),
            messages=[
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": render_batch(states, texts=texts)},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "signal_phases", "schema": TOOL_SCHEMA, "strict": True},
            },
        )
        if self.config.temperature is not None:
            params["temperature"] = self.config.temperature
        resp = call_with_retries(
            lambda: self._client.chat.completions.create(**params),
            backend="openai",
            policy=self.config.retry,
            stats=self.stats,
            connection_error=openai.APIConnectionError,
            status_error=openai.APIStatusError,
            base_error=openai.APIError,
            secret=self._key,
            sleep=self._sleep,
            key_var="OPENAI_API_KEY",
        )
        self._account(resp)
        return self._parse(resp, states)

    def _account(self, resp: Any) -> None:
        u = getattr(resp, "usage", None)
        if u is None:
            return
        prompt = int(getattr(u, "prompt_tokens", 0) or 0)
        completion = int(getattr(u, "completion_tokens", 0) or 0)
        details = getattr(u, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
        self.stats.input_tokens += prompt - cached
        self.stats.cached_tokens += cached
        self.stats.output_tokens += completion
        if self.config.price_per_mtok:
            pin, pout = self.config.price_per_mtok
            self.stats.cost_usd += (prompt * pin + completion * pout) / 1e6

    @staticmethod
    def _parse(resp: Any, states: Sequence[IntersectionState]) -> list[RawAnswer]:
        """JSON content -> one RawAnswer per state; anything unreadable is unparsable, not an error."""
        by_id: dict[str, RawAnswer] = {}
        dup: set[str] = set()
        try:
            content = resp.choices[0].message.content or ""
            data = json.loads(content)
        except (AttributeError, IndexError, TypeError, ValueError):
            data = None
        items = data.get("decisions") if isinstance(data, dict) else None
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            aid = str(item.get("intersection", "")).strip()
            if aid in by_id:
                dup.add(aid)
            by_id[aid] = RawAnswer(parse_phase(item.get("phase")), clean_reason(item.get("reason")))
        return [
            by_id[s.agent_id]
            if s.agent_id in by_id and s.agent_id not in dup
            else RawAnswer(None, "no single answer for this intersection")
            for s in states
        ]

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001
            pass
