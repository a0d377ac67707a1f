"""Any OpenAI-compatible chat server as demonstrator (OpenAI, vLLM, llama.cpp server, Ollama).

Selected by base URL and model name (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``OPENAI_MODEL``
or the config). Structured output through a ``response_format`` JSON schema that enumerates the
intersections of the request and each one's legal phases (see :mod:`.http`), so a server that
decodes under the schema (OpenAI strict mode, llama.cpp, vLLM, Ollama) can only return a legal
phase for every intersection. Many intersections per request, the same system prompt as the
Claude backend (servers with automatic prefix caching reuse it), retries with backoff, token
accounting (cost only when a price is configured: self-hosted servers are free and their model
names unknown).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from leed_traffic.state import IntersectionState

from .base import DemonstratorUnavailable
from .cache import AnswerCache
from .http import HTTPConfig, HTTPDemonstrator, Usage, loads_answer
from .text import SYSTEM_PROMPT, render_batch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
SCHEMA_NAME = "signal_phases"
_NO_KEY = "not-needed"  # self-hosted servers ignore the key but the SDK wants one

MISSING_SERVER = (
    "The openai demonstrator needs OPENAI_BASE_URL (an OpenAI-compatible server such as vLLM, "
    "llama.cpp or Ollama) or OPENAI_API_KEY set; without either use --llm local, max-pressure, "
    "longest-queue or claude."
)


@dataclass
class OpenAIConfig(HTTPConfig):
    model: str | None = None
    """Model name on the server; defaults to OPENAI_MODEL, then ``gpt-4o-mini``."""
    base_url: str | None = None
    """Defaults to OPENAI_BASE_URL, then the public OpenAI API."""
    timeout_s: float = 120.0
    temperature: float | None = 0.0
    """0 for reproducible answers; None omits it (some reasoning models reject the parameter)."""
    price_per_mtok: tuple[float, float] | None = None
    """(input, output) USD per million tokens, if you want a cost for a paid server."""


def _is_openai_api(base_url: str | None) -> bool:
    """The public OpenAI API, whose strict mode rejects length keywords such as ``maxLength``."""
    host = urlsplit(base_url).hostname if base_url else "api.openai.com"
    return bool(host) and (host == "api.openai.com" or host.endswith(".openai.com"))


class OpenAIDemonstrator(HTTPDemonstrator):
    backend = "openai"
    key_var = "OPENAI_API_KEY"

    def __init__(
        self,
        config: OpenAIConfig | None = None,
        cache: AnswerCache | None = None,
        api_key: str | None = None,
        http_client: Any = None,
        sleep: Any = time.sleep,
    ) -> None:
        config = config or OpenAIConfig()
        base_url = config.base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if not base_url and not key:
            raise DemonstratorUnavailable(MISSING_SERVER)
        super().__init__(config, cache, api_key=key, base_url=base_url, sleep=sleep)
        self.config: OpenAIConfig = config
        self.name = "openai"
        self.model = config.model or os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
        import openai

        self._client = openai.OpenAI(**self._client_options(key or _NO_KEY, http_client))

    def _sdk_errors(self):
        import openai

        return openai.APIConnectionError, openai.APIStatusError, openai.APIError

    def _reason_max_chars(self) -> int | None:
        return None if _is_openai_api(self.base_url) else self.config.reason_max_chars

    def _send(
        self,
        states: Sequence[IntersectionState],
        texts: Sequence[str],
        keys: Sequence[str],
        schema: dict[str, Any],
        max_tokens: int,
    ) -> Any:
        params: dict[str, Any] = dict(
            model=self.model,
            max_tokens=max_tokens,
            messages=[
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": render_batch(states, texts=texts, keys=keys)},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True},
            },
        )
        if self.config.temperature is not None:
            params["temperature"] = self.config.temperature
        return self._client.chat.completions.create(**params)

    def _payload(self, reply: Any) -> Any:
        try:
            content = reply.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError):
            return None
        return loads_answer(content) if isinstance(content, str) else None

    def _usage(self, reply: Any) -> Usage | None:
        u = getattr(reply, "usage", None)
        if u is None:
            return None
        prompt = int(getattr(u, "prompt_tokens", 0) or 0)
        details = getattr(u, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
        return Usage(
            input_tokens=prompt - cached,
            output_tokens=int(getattr(u, "completion_tokens", 0) or 0),
            cached_tokens=cached,
        )

    def _cost(self, usage: Usage) -> float:
        if not self.config.price_per_mtok:
            return 0.0
        pin, pout = self.config.price_per_mtok
        prompt = usage.input_tokens + usage.cached_tokens
        return (prompt * pin + usage.output_tokens * pout) / 1e6
