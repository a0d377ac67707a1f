"""What the remote chat-API demonstrators (Claude, any OpenAI-compatible server) share.

:class:`HTTPDemonstrator` owns everything that does not depend on the provider: many intersections
per request (at most ``max_batch``), the answer schema built for each request, retries with
bounded backoff on 429 / 5xx / connection errors (the SDKs' own retries are off so ours are
counted), key handling (the key is only given to the SDK and scrubbed from every error message),
token and cost accounting, answer parsing into :class:`RawAnswer` (validation, the validity
count and the answer cache live in :class:`LLMDemonstrator`). A backend only says how a request
is built and sent with its official SDK and how the reply is read.

The answer schema enumerates the request: one required property per intersection (its answer
key, normally the intersection id) whose value is ``{"phase": <one of the phases legal now>,
"reason": <short text>}``. A server that decodes under the schema (OpenAI strict mode, vLLM,
llama.cpp, Ollama) can then only produce a complete, legal answer for every intersection asked,
each exactly once; a server that does not still reads the legal answers in the schema. Answers
in the older list shape (``{"decisions": [{"intersection", "phase", "reason"}]}``) are still
accepted, and a reply cut off by the token limit keeps its complete entries. Anything else -- an
intersection missing or answered twice, a phase not legal now, text that is not JSON -- is an
unparsable answer (the phase is held and counted invalid), never an error; answers for
intersections that were not asked are ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from leed_traffic.state import IntersectionState

from .base import (
    DemonstratorError,
    DemonstratorStats,
    LLMDemonstrator,
    RawAnswer,
    clean_reason,
    parse_phase,
)
from .cache import AnswerCache

log = logging.getLogger(__name__)

T = TypeVar("T")

NO_ANSWER = "no single answer for this intersection"

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""Property names Anthropic accepts in a tool's input schema (OpenAI and llama.cpp accept any)."""


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    """Total tries per request on retryable errors (429, 5xx, 529 overloaded, network)."""
    backoff_s: float = 1.0
    """First retry delay; doubles each retry up to ``backoff_max_s``; a longer Retry-After wins."""
    backoff_max_s: float = 30.0


def _retry_after(exc: BaseException) -> float | None:
    resp = getattr(exc, "response", None)
    try:
        value = resp.headers.get("retry-after") if resp is not None else None
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def call_with_retries(
    fn: Callable[[], T],
    *,
    backend: str,
    policy: RetryPolicy,
    stats: DemonstratorStats,
    connection_error: type[BaseException],
    status_error: type[BaseException],
    base_error: type[BaseException],
    secret: str | None,
    sleep: Callable[[float], None] = time.sleep,
    key_var: str = "",
) -> T:
    """Run one API request with bounded exponential backoff on transient failures.

    Retryable: connection errors and timeouts, HTTP 408/409/429 and every 5xx (529 = overloaded).
    Anything else, or the last failure, becomes a :class:`DemonstratorError` whose message names
    the error class and status but never the request, the response body or the key.
    """
    delay = policy.backoff_s

    def scrub(text: str) -> str:
        return text.replace(secret, "[redacted]") if secret else text

    for attempt in range(1, policy.max_attempts + 1):
        stats.calls += 1
        try:
            return fn()
        except base_error as e:
            status = getattr(e, "status_code", None) if isinstance(e, status_error) else None
            what = type(e).__name__ + (f" (HTTP {status})" if status else "")
            retryable = isinstance(e, connection_error) or (
                status is not None and (status in (408, 409, 429) or status >= 500)
            )
            if not retryable:
                hint = f" -- check {key_var}" if status in (401, 403) and key_var else ""
                raise DemonstratorError(scrub(f"{backend} request failed: {what}{hint}")) from None
            if attempt == policy.max_attempts:
                raise DemonstratorError(
                    scrub(
                        f"{backend} request failed after {attempt} attempts: {what}; answers so "
                        "far are cached, re-run to resume"
                    )
                ) from None
            wait = min(policy.backoff_max_s, max(delay, _retry_after(e) or 0.0))
            log.warning("%s: %s, retry %d in %.1f s", backend, what, attempt, wait)
            stats.retries += 1
            sleep(wait)
            delay *= 2
    raise AssertionError("unreachable")


@dataclass
class HTTPConfig:
    """Settings shared by the remote backends (each backend's config adds its own)."""

    max_batch: int = 40
    """Intersections per request: helsinki's 35 agents fit in one request per decision step."""
    tokens_per_decision: int = 48
    """Output budget per intersection (JSON + a 15-word reason); the length of its key and the
    reason bound (``reason_max_chars``) are added."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 60.0
    base_url: str | None = None
    reason_max_chars: int | None = 100
    """``maxLength`` of each reason in the schema, so a constrained small model cannot ramble
    past the token budget; None leaves reasons unbounded."""


@dataclass
class Usage:
    """Tokens of one reply, in the provider-neutral split the stats use."""

    input_tokens: int = 0
    """Uncached input tokens."""
    output_tokens: int = 0
    cached_tokens: int = 0
    """Input tokens read from the provider's prompt cache."""
    cache_write_tokens: int = 0


def answer_keys(states: Sequence[IntersectionState]) -> list[str]:
    """The property name each intersection is answered under: its id when that is a plain name
    of at most 64 characters (Anthropic's limit), else a readable, deterministic stand-in (the
    batch prompt then names it); unique within the request."""
    keys: list[str] = []
    for s in states:
        aid = s.agent_id
        key = aid
        if not _SAFE_KEY.match(aid):
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", aid)[:55]
            key = f"{safe}_{hashlib.sha1(aid.encode()).hexdigest()[:8]}"
        n = 2
        base = key
        while key in keys:  # the same intersection twice in one request (different states)
            key = f"{base[:60]}-{n}"
            n += 1
        keys.append(key)
    return keys


def answer_schema(
    states: Sequence[IntersectionState],
    keys: Sequence[str],
    reason_max_chars: int | None = None,
) -> dict[str, Any]:
    """JSON schema of the answer to one request: exactly these intersections, each with one of
    its legal phases. Only keywords OpenAI strict mode, llama.cpp's grammar conversion, vLLM and
    Anthropic tool schemas all accept (``maxLength`` aside, which callers drop for OpenAI)."""
    props: dict[str, Any] = {}
    for s, key in zip(states, keys):
        reason: dict[str, Any] = {"type": "string", "description": "At most 15 words."}
        if reason_max_chars:
            reason["maxLength"] = int(reason_max_chars)
        props[key] = {
            "type": "object",
            "properties": {
                "phase": {"type": "integer", "enum": [int(a) for a in s.legal_actions]},
                "reason": reason,
            },
            "required": ["phase", "reason"],
            "additionalProperties": False,
        }
    return {
        "type": "object",
        "description": "For each intersection id: a phase legal now and a short reason.",
        "properties": props,
        "required": list(keys),
        "additionalProperties": False,
    }


class _Pairs(dict):
    """A JSON object that remembers the keys it saw more than once (an ambiguous answer)."""

    dups: frozenset[str] = frozenset()


def _object_pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    out = _Pairs()
    dups = set()
    for k, v in pairs:
        if k in out:
            dups.add(k)
        out[k] = v
    out.dups = frozenset(dups)
    return out


def loads_answer(text: str) -> Any:
    """Model text -> JSON value; duplicated keys are remembered. A reply cut off by the token
    limit keeps its complete leading entries (the rest go unanswered). None when not JSON."""
    text = text.strip()
    if text.startswith("```"):  # a fenced block from a model ignoring the response format
        text = text.strip("`").removeprefix("json").strip()
    try:
        return json.loads(text, object_pairs_hook=_object_pairs)
    except ValueError:
        pass
    if not text.startswith("{"):
        return None
    # truncated: close the object after the last complete entry (at most a few dozen tries)
    ends = [m.start() for m in re.finditer(r"}", text)][::-1][:100]
    for end in ends:
        for close in ("}", "]}"):
            try:
                data = json.loads(text[: end + 1] + close, object_pairs_hook=_object_pairs)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    return None


def _raw(value: Any) -> RawAnswer:
    if isinstance(value, dict):
        return RawAnswer(parse_phase(value.get("phase")), clean_reason(value.get("reason")))
    return RawAnswer(parse_phase(value))  # a bare phase number: lenient


def parse_answers(data: Any, states: Sequence[IntersectionState], keys: Sequence[str]) -> list[RawAnswer]:
    """A decoded reply -> one RawAnswer per state, in order.

    Reads the keyed shape ``{key: {"phase", "reason"}}`` (a bare phase is accepted too; an
    intersection may also be keyed by its raw id) and the older list shape. An intersection
    answered twice, or not at all, is unparsable.
    """
    by_key: dict[str, RawAnswer] = {}
    dup: set[str] = set()
    if isinstance(data, dict):
        dup |= set(getattr(data, "dups", ()))
        items = data.get("decisions")
        if isinstance(items, list):  # older shape: [{"intersection", "phase", "reason"}]
            for item in items:
                if not isinstance(item, dict):
                    continue
                aid = str(item.get("intersection", "")).strip()
                if aid in by_key:
                    dup.add(aid)
                by_key[aid] = _raw(item)
        for k, v in data.items():
            if k == "decisions" and isinstance(v, list):
                continue
            if k in by_key:
                dup.add(k)
            by_key[k] = _raw(v)
    out = []
    for s, key in zip(states, keys):
        hit = key if key in by_key else s.agent_id
        if hit in by_key and hit not in dup:
            out.append(by_key[hit])
        else:
            out.append(RawAnswer(None, NO_ANSWER))
    return out


class HTTPDemonstrator(LLMDemonstrator):
    """A demonstrator behind a remote chat API, reached through the provider's official SDK.

    Subclasses set :attr:`backend` and :attr:`key_var` and implement :meth:`_sdk_errors`,
    :meth:`_send`, :meth:`_payload`, :meth:`_usage` and :meth:`_cost`.
    """

    key_var: str = ""
    """Environment variable of the API key, named in errors about a rejected key."""
    is_llm = True

    def __init__(
        self,
        config: HTTPConfig,
        cache: AnswerCache | None,
        *,
        api_key: str | None,
        base_url: str | None,
        sleep: Callable[[float], None],
    ) -> None:
        super().__init__(cache)
        self.config = config
        self.base_url = base_url
        self._key = api_key
        self._sleep = sleep
        self._client: Any = None

    def _client_options(self, api_key: str, http_client: Any) -> dict[str, Any]:
        """SDK client arguments: our retries instead of the SDK's, our timeout and base URL."""
        kwargs: dict[str, Any] = dict(api_key=api_key, max_retries=0, timeout=self.config.timeout_s)
        if self.base_url:
            kwargs["base_url"] = self.base_url
        if http_client is not None:
            kwargs["http_client"] = http_client
        return kwargs

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    # -- provider hooks -----------------------------------------------------------------------
    @abstractmethod
    def _sdk_errors(self) -> tuple[type[BaseException], type[BaseException], type[BaseException]]:
        """The SDK's (connection error, HTTP status error, base API error) classes."""

    @abstractmethod
    def _send(
        self,
        states: Sequence[IntersectionState],
        texts: Sequence[str],
        keys: Sequence[str],
        schema: dict[str, Any],
        max_tokens: int,
    ) -> Any:
        """Build and send one request (no retries: the caller retries); return the SDK reply."""

    @abstractmethod
    def _payload(self, reply: Any) -> Any:
        """The structured answer in a reply (decoded JSON), or None when it has none."""

    @abstractmethod
    def _usage(self, reply: Any) -> Usage | None:
        """Token counts of a reply, when it reports them."""

    def _cost(self, usage: Usage) -> float:
        """USD of a reply; 0 unless the backend knows a price."""
        return 0.0

    def _reason_max_chars(self) -> int | None:
        return self.config.reason_max_chars

    # -- shared machinery ---------------------------------------------------------------------
    def _max_tokens(self, keys: Sequence[str]) -> int:
        """Output budget per intersection: the fixed part, its key (written out) and, when the
        schema bounds reasons, that bound -- a small model decoding under the schema may fill
        every reason to the limit, and a reply cut short loses the intersections after the cut."""
        per = self.config.tokens_per_decision + (self._reason_max_chars() or 0)
        return 64 + sum(per + len(k) for k in keys)

    def _ask(self, states: Sequence[IntersectionState], texts: Sequence[str]) -> list[RawAnswer]:
        """Many intersections per request, ``max_batch`` at most."""
        out: list[RawAnswer] = []
        n = max(1, self.config.max_batch)
        for lo in range(0, len(states), n):
            out += self._ask_chunk(states[lo : lo + n], texts[lo : lo + n])
        return out

    def _ask_chunk(self, states: Sequence[IntersectionState], texts: Sequence[str]) -> list[RawAnswer]:
        keys = answer_keys(states)
        schema = answer_schema(states, keys, self._reason_max_chars())
        max_tokens = self._max_tokens(keys)
        reply = self._request(lambda: self._send(states, texts, keys, schema, max_tokens))
        self._account(reply)
        try:
            data = self._payload(reply)
        except Exception as e:  # noqa: BLE001 - a reply we cannot read is unparsable, not a crash
            log.debug("%s: unreadable reply (%s)", self.backend, type(e).__name__)
            data = None
        return parse_answers(data, states, keys)

    def _request(self, fn: Callable[[], T]) -> T:
        connection_error, status_error, base_error = self._sdk_errors()
        return call_with_retries(
            fn,
            backend=self.backend,
            policy=self.config.retry,
            stats=self.stats,
            connection_error=connection_error,
            status_error=status_error,
            base_error=base_error,
            secret=self._key,
            sleep=self._sleep,
            key_var=self.key_var,
        )

    def _account(self, reply: Any) -> None:
        try:
            usage = self._usage(reply)
        except (AttributeError, TypeError, ValueError):
            usage = None
        if usage is None:
            return
        self.stats.input_tokens += usage.input_tokens
        self.stats.output_tokens += usage.output_tokens
        self.stats.cached_tokens += usage.cached_tokens
        self.stats.cache_write_tokens += usage.cache_write_tokens
        self.stats.cost_usd += self._cost(usage)

    def close(self) -> None:
        try:
            if self._client is not None:
                self._client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
