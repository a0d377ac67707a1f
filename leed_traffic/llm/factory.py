"""Build a demonstrator by name: the one place the CLI and the generator choose a backend."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import Demonstrator
from .cache import AnswerCache

log = logging.getLogger(__name__)

CHOICES = ("auto", "claude", "openai", "local", "max-pressure", "longest-queue", "random")


def resolve_auto() -> tuple[str, str]:
    """(backend, why) for ``auto``: Claude when a key is present, otherwise the embedded model."""
    if os.environ.get("ANTHROPIC_API_KEY"):
        return "claude", "ANTHROPIC_API_KEY is set"
    return "local", "ANTHROPIC_API_KEY is not set, so the embedded offline model is used"


def make_demonstrator(
    name: str,
    *,
    cache: AnswerCache | str | Path | None = None,
    model: str | None = None,
    agents: Sequence[str] | None = None,
    **opts: Any,
) -> Demonstrator:
    """``name`` in :data:`CHOICES`. ``cache``: an AnswerCache or a path to its sqlite file;
    ``model`` overrides the backend's default model; ``agents`` lets the local model size its KV
    slots; remaining ``opts`` go to the backend's config dataclass (e.g. ``max_batch=20``) or
    constructor (``http_client=``, ``api_key=``, ``sleep=``)."""
    key = name.strip().lower().replace("_", "-")
    if key not in CHOICES:
        raise ValueError(f"unknown demonstrator {name!r}; choose one of {', '.join(CHOICES)}")
    if key == "auto":
        key, why = resolve_auto()
        log.info("--llm auto -> %s (%s)", key, why)
    if key == "max-pressure":
        from .experts import MaxPressure

        return MaxPressure()
    if key == "longest-queue":
        from .experts import LongestQueue

        return LongestQueue()
    if key == "random":  # uniform over the legal phases: the worst-case reference (``seed=`` opt)
        from .experts import RandomExpert

        return RandomExpert(seed=int(opts.get("seed", 0)))

    store = cache if isinstance(cache, AnswerCache) or cache is None else AnswerCache(cache)
    ctor_keys = {"http_client", "api_key", "sleep"}
    ctor = {k: opts.pop(k) for k in list(opts) if k in ctor_keys}
    if key == "claude":
        from .claude import ClaudeConfig, ClaudeDemonstrator

        cfg = ClaudeConfig(**opts)
        if model:
            cfg.model = model
        return ClaudeDemonstrator(cfg, cache=store, **ctor)
    if key == "openai":
        from .openai_backend import OpenAIConfig, OpenAIDemonstrator

        return OpenAIDemonstrator(OpenAIConfig(model=model, **opts), cache=store, **ctor)
    from .local import LocalConfig, LocalDemonstrator

    if model:
        opts.setdefault("model_path", model)
    return LocalDemonstrator(LocalConfig(**opts), cache=store, agents=agents)
