"""The OpenAI backend against a REAL OpenAI-compatible server: llama.cpp's HTTP server (xllamacpp)
serving the embedded SmolLM2-135M on 127.0.0.1, through the openai SDK and real HTTP. The request's
JSON schema enumerates the intersections and their legal phases, and llama.cpp decodes under it,
so even this tiny model answers every intersection legally."""

from __future__ import annotations

import dataclasses
import json
import time

import httpx2
import pytest

from leed_traffic.llm import make_demonstrator
from leed_traffic.state import Movement, PhaseInfo
from llm_states import crossing

LONG_ID = "GS_cluster_2415878664_254486231_359566_359576_1234567890_1234567890"


@pytest.fixture(scope="module")
def server():
    """One server per module: destroying a llama.cpp server right after starting it has hung."""
    from leed_traffic.llm.local import LocalOpenAIServer

    try:
        srv = LocalOpenAIServer(threads=1, ctx=4096)
    except Exception as e:  # noqa: BLE001 - the embedded model or xllamacpp missing here
        pytest.skip(f"embedded model unavailable: {e}")
    yield srv
    srv.close()


def _three_phase(agent: str) -> object:
    base = crossing(agent, queues=(0, 0), current=2)
    mv = (Movement("Bulevardi", "west", "Bulevardi", "through"),)
    phases = base.phases + (PhaseInfo(2, "rrrrrrrrr", mv, queue=0),)
    return dataclasses.replace(base, phases=phases, current_phase=2, legal_actions=(0, 2))


def test_openai_backend_through_real_server_is_all_legal(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    bodies: list[dict] = []
    client = httpx2.Client(event_hooks={"request": [lambda r: bodies.append(json.loads(r.read()))]})
    d = make_demonstrator("openai", base_url=server.base_url, model=server.model, http_client=client)
    states = [
        _three_phase("T2"),                                 # 0 and 2 legal, 1 is not
        crossing(LONG_ID, queues=(0, 9), current=0),      # an id too long for a property name
        crossing("J4", current=1, legal=(1,)),            # forced: not asked
    ]
    t0 = time.perf_counter()
    out = d.decide(states)
    took = time.perf_counter() - t0
    assert all(x.valid for x in out), out
    assert [x.phase in s.legal_actions for x, s in zip(out, states)] == [True] * 3
    assert d.stats.invalid == 0 and d.stats.validity == 1.0 and d.stats.forced == 1
    assert d.stats.calls == 1 and d.stats.input_tokens + d.stats.cached_tokens > 400
    assert d.stats.output_tokens > 0
    # the request carried the enumerated schema (the two asked intersections, their legal phases)
    (body,) = bodies
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    schema = rf["json_schema"]["schema"]
    keys = list(schema["properties"])
    assert len(keys) == 2 and keys[0] == "T2" and keys[1] != LONG_ID and len(keys[1]) <= 64
    assert schema["required"] == keys
    enums = [schema["properties"][k]["properties"]["phase"]["enum"] for k in keys]
    assert enums == [[0, 2], [0, 1]]
    assert f'under the key "{keys[1]}"' in body["messages"][1]["content"]
    assert took < 120
    d.close()
