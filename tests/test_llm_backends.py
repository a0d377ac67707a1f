"""Backends through their real client code: anthropic / openai SDKs against fake HTTP transports
(no network), the embedded model for real, the reference experts, the factory."""

from __future__ import annotations

import dataclasses
import json
import logging

import httpx2
import pytest

from leed_traffic.llm import DemonstratorError, DemonstratorUnavailable, make_demonstrator
from leed_traffic.llm.claude import TOOL_NAME
from leed_traffic.state import Movement, PhaseInfo
from llm_states import crossing

KEY = "sk-ant-test-SECRET-0123456789"


def _claude_reply(decisions, usage=None):
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-5-5",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME,
                     "input": {"decisions": decisions}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": usage or {"input_tokens": 1000, "output_tokens": 100,
                           "cache_creation_input_tokens": 0, "cache_read_input_tokens": 500},
    }


class FakeServer:
    """Scripted HTTP replies; records every request body and headers."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests: list[dict] = []
        self.headers: list[dict] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(json.loads(request.content))
        self.headers.append(dict(request.headers))
        status, body, headers = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if callable(body):
            body = body(self.requests[-1])
        return httpx2.Response(status, json=body, headers=headers or {})

    def client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self))


def _claude(server, **opts):
    return make_demonstrator("claude", http_client=server.client(), api_key=KEY,
                             sleep=lambda s: server.headers.append({"slept": s}), **opts)


def _echo_best(request):
    """A 'model' that answers, for every intersection in the prompt, phase 0 with a reason."""
    text = request["messages"][0]["content"]
    ids = [line.split(":")[0].removeprefix("Intersection ") for line in text.splitlines()
           if line.startswith("Intersection ")]
    return _claude_reply([{"intersection": i, "phase": 0, "reason": "north-south queue"} for i in ids])


# ---------------------------------------------------------------------------- claude
def test_claude_batches_forced_tool_cached_system_no_temperature():
    server = FakeServer([(200, _echo_best, None)])
    d = _claude(server)
    states = [crossing(f"J{i}") for i in range(5)]
    out = d.decide(states)
    assert [x.phase for x in out] == [0] * 5 and all(x.valid for x in out)
    assert out[0].reason == "north-south queue"
    assert len(server.requests) == 1  # one request for the whole batch
    body = server.requests[0]
    assert "temperature" not in body
    assert body["model"] == "claude-haiku-5-5"
    assert body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][0]["content"].count("Intersection J") == 5
    h = server.headers[0]  # this SDK sends the key as a bearer token
    assert KEY in (h.get("x-api-key"), h.get("authorization", "").removeprefix("Bearer "))
    # token and cost accounting (haiku 5.5: $0.10 in, $0.50 out, $0.01 cache read per MTok)
    s = d.stats
    assert (s.calls, s.input_tokens, s.output_tokens, s.cached_tokens) == (1, 1000, 100, 500)
    assert s.cost_usd == pytest.approx((1000 * 0.10 + 100 * 0.50 + 500 * 0.01) / 1e6)


def test_claude_chunks_large_batches():
    server = FakeServer([(200, _echo_best, None)])
    d = _claude(server, max_batch=2)
    d.decide([crossing(f"J{i}") for i in range(5)])
    assert len(server.requests) == 3


def test_claude_retries_429_then_succeeds():
    server = FakeServer([
        (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}, {"retry-after": "0"}),
        (529, {"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}}, None),
        (200, _echo_best, None),
    ])
    d = _claude(server)
    out = d.decide([crossing("J1")])
    assert out[0].valid and out[0].phase == 0
    assert d.stats.calls == 3 and d.stats.retries == 2
    sleeps = [h["slept"] for h in server.headers if "slept" in h]
    assert sleeps == [1.0, 2.0]  # exponential backoff


def test_claude_gives_up_with_clear_error_without_key():
    err = {"type": "error", "error": {"type": "overloaded_error", "message": f"overloaded {KEY}"}}
    server = FakeServer([(529, err, None)])
    d = _claude(server)
    with pytest.raises(DemonstratorError) as e:
        d.decide([crossing("J1")])
    msg = str(e.value)
    assert "after 6 attempts" in msg and "529" in msg and "resume" in msg
    assert KEY not in msg and KEY not in repr(d)
    assert d.stats.calls == 6


def test_claude_auth_error_is_not_retried_and_not_leaked(caplog):
    err = {"type": "error", "error": {"type": "authentication_error", "message": f"bad key {KEY}"}}
    server = FakeServer([(401, err, None)])
    d = _claude(server)
    with caplog.at_level(logging.DEBUG), pytest.raises(DemonstratorError) as e:
        d.decide([crossing("J1")])
    assert "401" in str(e.value) and "ANTHROPIC_API_KEY" in str(e.value)
    assert KEY not in str(e.value) and KEY not in caplog.text
    assert d.stats.calls == 1


def test_claude_malformed_answers_are_invalid_not_crashes():
    reply = _claude_reply([
        {"intersection": "A", "phase": "north", "reason": "?"},   # not a number
        {"intersection": "B", "phase": 9, "reason": "x"},         # out of range
        {"intersection": "C", "phase": 0, "reason": "ok"},
        {"intersection": "C", "phase": 1, "reason": "dup"},       # duplicated id: ambiguous
        {"intersection": "E", "phase": "1", "reason": "digit string is fine"},
        "garbage",
    ])
    server = FakeServer([(200, reply, None)])
    d = _claude(server)
    states = [crossing(x, current=1) for x in "ABCDE"] + [crossing("F", legal=(1,))]
    out = d.decide(states)
    assert [x.valid for x in out] == [False, False, False, False, True, True]
    assert all(x.phase == 1 for x in out[:4])  # held current phase
    assert "not legal" in out[1].reason
    assert d.stats.invalid == 4 and d.stats.forced == 1
    assert len(server.requests[0]["messages"][0]["content"].split("### ")) == 6  # F not asked


def test_claude_reply_without_tool_use_is_invalid():
    reply = _claude_reply([])
    reply["content"] = [{"type": "text", "text": "I think phase 0."}]
    d = _claude(FakeServer([(200, reply, None)]))
    assert d.decide([crossing("A")])[0].valid is False


def test_claude_missing_key_message(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(DemonstratorUnavailable) as e:
        make_demonstrator("claude")
    msg = str(e.value)
    assert "ANTHROPIC_API_KEY" in msg
    for alt in ("local", "max-pressure", "longest-queue", "openai"):
        assert alt in msg
    assert msg.count(".") == 1  # one sentence


def test_claude_honours_base_url_env(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/proxy")
    seen = []

    def handler(request):
        seen.append(str(request.url))
        return httpx2.Response(200, json=_echo_best(json.loads(request.content)))

    d = make_demonstrator("claude", api_key=KEY, http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    d.decide([crossing("A")])
    assert seen[0].startswith("http://127.0.0.1:9/proxy")


def test_claude_answers_are_cached(tmp_path):
    server = FakeServer([(200, _echo_best, None)])
    d = _claude(server, cache=tmp_path / "c.sqlite")
    d.decide([crossing("A"), crossing("B")])
    d2 = _claude(server, cache=tmp_path / "c.sqlite")
    out = d2.decide([crossing("A"), crossing("B")])
    assert len(server.requests) == 1 and d2.stats.cache_hits == 2 and all(x.valid for x in out)


# ---------------------------------------------------------------------------- openai
def _openai_reply(content, usage=None):
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "qwen",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": usage or {"prompt_tokens": 800, "completion_tokens": 60, "total_tokens": 860},
    }


def _openai(server, **opts):
    return make_demonstrator("openai", http_client=server.client(), sleep=lambda s: None, **opts)


def test_openai_compatible_server_json_schema(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    content = json.dumps({"decisions": [{"intersection": "A", "phase": 0, "reason": "queue"},
                                        {"intersection": "B", "phase": 1, "reason": "keep"}]})
    server = FakeServer([(503, {"error": {"message": "loading"}}, None), (200, _openai_reply(content), None)])
    d = _openai(server, model="qwen2.5-7b")
    out = d.decide([crossing("A"), crossing("B")])
    assert [(x.phase, x.valid) for x in out] == [(0, True), (1, True)]
    body = server.requests[-1]
    assert body["model"] == "qwen2.5-7b"
    assert body["response_format"]["type"] == "json_schema"
    assert body["messages"][0]["role"] == "system"
    assert d.stats.calls == 2 and d.stats.input_tokens == 800 and d.stats.output_tokens == 60


def test_openai_malformed_json_is_invalid(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")
    d = _openai(FakeServer([(200, _openai_reply("phase 0 please {"), None)]))
    out = d.decide([crossing("A", current=1)])
    assert out[0].valid is False and out[0].phase == 1 and d.stats.invalid == 1


def test_openai_missing_configuration(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(DemonstratorUnavailable, match="OPENAI_BASE_URL"):
        make_demonstrator("openai")


def test_openai_key_not_leaked(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = FakeServer([(401, {"error": {"message": f"invalid key {KEY}"}}, None)])
    d = _openai(server)
    with pytest.raises(DemonstratorError) as e:
        d.decide([crossing("A")])
    assert KEY not in str(e.value) and "OPENAI_API_KEY" in str(e.value)
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"


# ---------------------------------------------------------------------------- experts
def test_experts_are_labelled_and_choose_legal_best():
    mp = make_demonstrator("max-pressure")
    lq = make_demonstrator("longest-queue")
    assert not mp.is_llm and not lq.is_llm and "not an LLM" in mp.describe()
    s = crossing(queues=(2, 9), pressures=(8.0, 1.0), current=1)
    assert mp.decide([s])[0].phase == 0
    assert lq.decide([s])[0].phase == 1
    tie = crossing(queues=(4, 4), current=1)
    assert mp.decide([tie])[0].phase == 1 and lq.decide([tie])[0].phase == 1  # ties keep current
    locked = crossing(queues=(20, 0), current=1, legal=(1,))
    assert mp.decide([locked])[0].phase == 1  # never an illegal phase


# ---------------------------------------------------------------------------- factory
def test_factory_auto(monkeypatch, caplog):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with caplog.at_level(logging.INFO):
        d = make_demonstrator("auto")
    assert d.name == "claude" and "ANTHROPIC_API_KEY is set" in caplog.text
    assert KEY not in caplog.text
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        d = make_demonstrator("auto")
    assert d.name == "local" and "not set" in caplog.text
    with pytest.raises(ValueError, match="max-pressure"):
        make_demonstrator("gpt-9")


# ---------------------------------------------------------------------------- local (real model)
def _three_phase(agent="T", queues=(0, 15, 0), current=0, legal=(0, 1, 2)):
    base = crossing(agent)
    mv = (Movement("Bulevardi", "west", "Bulevardi", "through"),)
    phases = base.phases + (PhaseInfo(2, "rrrrrrrrr", mv, queue=queues[2]),)
    phases = tuple(dataclasses.replace(p, queue=q) for p, q in zip(phases, queues))
    return dataclasses.replace(base, phases=phases, current_phase=current, legal_actions=legal)


@pytest.fixture(scope="module")
def local_model():
    d = make_demonstrator("local", agents=["A", "B", "C"])
    yield d
    d.close()


def test_local_model_always_answers_legal(local_model):
    states = [_three_phase("A"), _three_phase("B", legal=(0, 2)), crossing("C", legal=(0, 1))]
    out = local_model.decide(states)
    assert all(d.valid for d in out)
    assert [d.phase in s.legal_actions for d, s in zip(out, states)] == [True] * 3
    assert out[1].phase in (0, 2)
    assert local_model.stats.calls == 3 and local_model.stats.invalid == 0
    assert "SmolLM2 picked phase" in out[0].reason
    # same questions again: answered from the in-process cache? no cache configured -> asked again,
    # but the prompt prefix is reused from the agent's KV slot
    before = local_model.stats.cached_tokens
    local_model.decide(states)
    assert local_model.stats.cached_tokens - before > 100


def test_local_prompt_is_compact_and_coarse(local_model):
    a = local_model.render(_three_phase("A", queues=(0, 12, 1)), None)
    b = local_model.render(_three_phase("A", queues=(0, 14, 2)), None)
    assert a == b  # coarse levels: many/few are the same question (cache hits)
    assert "Queues: 1: none, 2: many, 3: few. Allowed: 1 2 3." in a
