"""LEED's demonstration-generation (DG) module: intersection states as text -> phase decisions
from an LLM (Claude, an OpenAI-compatible server, an embedded model) or a reference expert."""

from .base import (
    Decision,
    Demonstrator,
    DemonstratorError,
    DemonstratorStats,
    DemonstratorUnavailable,
)
from .cache import AnswerCache
from .factory import CHOICES, make_demonstrator, resolve_auto
from .text import PROMPT_VERSION, render_batch, render_state

__all__ = [
    "CHOICES",
    "PROMPT_VERSION",
    "AnswerCache",
    "Decision",
    "Demonstrator",
    "DemonstratorError",
    "DemonstratorStats",
    "DemonstratorUnavailable",
    "make_demonstrator",
    "render_batch",
    "render_state",
    "resolve_auto",
]
