"""Generation + refinement rounds on a short helsinki horizon (small, fast)."""

from __future__ import annotations

import gzip
import json

import httpx2
import numpy as np
import pytest

from leed_traffic.dataset import DemoDataset
from leed_traffic.demos import feedback_text, generate_demos, select_best
from leed_traffic.llm.claude import TOOL_NAME


@pytest.fixture(scope="module", autouse=True)
def _needs_helsinki():
    try:
        from leed_traffic.env import make_env

        make_env("helsinki", seconds=60).close()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"helsinki scenario unavailable: {e}")


def test_refinement_run_max_pressure(tmp_path):
    out = tmp_path / "run"
    path = generate_demos("helsinki", llm="max-pressure", rounds=2, seconds=150, out=out,
                          progress=False, require_beat_fixed=False, keep=1)
    ds = DemoDataset.load(path)
    meta = ds.metadata
    assert meta["city"] == "helsinki" and meta["demonstrator"] == "max-pressure" and meta["is_llm"] is False
    assert meta["rounds"] == 2 and [r["round"] for r in meta["per_round"]] == [1, 2]
    assert all(r["validity"] == 1.0 for r in meta["per_round"])
    assert len(ds.agents) == 35 and meta["agents_without_demos"] == []
    a = next(iter(ds.agents.values()))
    assert len(a) == 30 and a.obs.shape[0] == 30 and a.obs.dtype == np.float32
    assert set(np.unique(a.episode)) <= {0, 1}
    r2 = json.loads((out / "rounds" / "round_1.json").read_text())
    assert r2["feedback_used"] is True
    some_feedback = next(iter(r2["next_feedback"].values()))
    assert "fixed time" in some_feedback
    fixed = json.loads((out / "fixed_time.json").read_text())
    assert len(fixed["agents"]) == 35

    # resume: nothing is re-run, the dataset is rebuilt identically
    before = (out / "rounds" / "round_0.npz").stat().st_mtime_ns
    ds2 = DemoDataset.load(generate_demos("helsinki", llm="max-pressure", rounds=2, seconds=150, out=out,
                                          progress=False, require_beat_fixed=False, keep=1))
    assert (out / "rounds" / "round_0.npz").stat().st_mtime_ns == before
    assert np.array_equal(ds2.agents[a_id := next(iter(ds.agents))].actions, ds.agents[a_id].actions)


def test_llm_round_records_texts_feedback_and_invalid(tmp_path, monkeypatch):
    """Claude through its SDK against a fake transport: one request per decision step, invalid
    answers counted, round-2 prompts carry round-1 feedback, the partial round is resumable."""
    prompts: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        text = body["messages"][0]["content"]
        prompts.append(text)
        ids = [ln.split(":")[0].removeprefix("Intersection ") for ln in text.splitlines()
               if ln.startswith("Intersection ")]
        dec = [{"intersection": i, "phase": 99 if i == ids[0] else 0, "reason": "r"} for i in ids]
        return httpx2.Response(200, json={
            "id": "m", "type": "message", "role": "assistant", "model": "claude-haiku-5-5",
            "content": [{"type": "tool_use", "id": "t", "name": TOOL_NAME, "input": {"decisions": dec}}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        })

    out = tmp_path / "run"
    path = generate_demos(
        "helsinki", llm="claude", rounds=2, seconds=60, out=out, progress=False,
        require_beat_fixed=False,
        llm_options={"api_key": "sk-test-DO-NOT-LEAK",
                     "http_client": httpx2.Client(transport=httpx2.MockTransport(handler))},
    )
    ds = DemoDataset.load(path)
    per_round = ds.metadata["per_round"]
    steps = 12
    assert all(r["calls"] <= steps for r in per_round)  # <= 1 request per decision step
    assert all(0 < r["validity"] < 1 for r in per_round)  # the 99s were counted invalid
    assert per_round[0]["invalid"] > 0
    assert not any("Feedback from the previous round" in p for p in prompts[: per_round[0]["calls"]])
    assert any("Feedback from the previous round" in p for p in prompts[per_round[0]["calls"]:])
    rows = [json.loads(line) for line in gzip.open(out / "rounds" / "round_0.texts.jsonl.gz", "rt")]
    assert rows and {"agent", "text", "reason", "valid", "phase"} <= set(rows[0])
    assert any(not r["valid"] for r in rows)
    for f in out.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".sqlite"):
            assert b"sk-test-DO-NOT-LEAK" not in f.read_bytes()


def test_feedback_and_selection_logic():
    agent = {"return": -5.0, "fixed_return": -3.0, "invalid": 2, "asked": 10, "switches": 7,
             "mean_queues": {"Kaivokatu (east)": 4.0, "Mannerheimintie (north)": 1.0}}
    fixed = {"switches": 3, "mean_queues": {"Kaivokatu (east)": 1.0, "Mannerheimintie (north)": 1.0}}
    text = feedback_text(agent, fixed)
    assert "worse than fixed time (-3.0)" in text
    assert "2 of 10 answers were not legal" in text
    assert "queues grew most from Kaivokatu (east) (4.0 vs 1.0" in text
    assert "switched 7 times (fixed time 3)" in text

    from leed_traffic.dataset import AgentDemos

    def demos(k, n=3):
        return {"A": AgentDemos(np.zeros((n, 2), np.float32), np.zeros(n, np.int64), np.ones(n, np.float32),
                                np.full(n, k, np.int64), np.ones(n, bool))}

    rounds = [(demos(0), {"agents": {"A": {"return": -4.0, "fixed_return": -3.0}}}),
              (demos(1), {"agents": {"A": {"return": -1.0, "fixed_return": -3.0}}}),
              (demos(2), {"agents": {"A": {"return": -2.0, "fixed_return": -3.0}}})]
    best, kept = select_best(rounds, keep=2, require_beat_fixed=True)
    assert kept == {"A": [1, 2]} and len(best["A"]) == 6
    best, kept = select_best(rounds[:1], keep=2, require_beat_fixed=True)
    assert best == {} and kept == {}  # worse than fixed time: not expert data
    # a round that beats fixed time over the whole city is trusted at every intersection
    city = [(demos(0), {"return": -10.0, "fixed_return": -20.0,
                        "agents": {"A": {"return": -4.0, "fixed_return": -3.0}}})]
    best, kept = select_best(city, keep=2, require_beat_fixed=True)
    assert kept == {"A": [0]}


def test_dataset_save_replaces_atomically(tmp_path):
    from leed_traffic.dataset import AgentDemos

    def ds(n: int) -> DemoDataset:
        return DemoDataset({"A": AgentDemos(np.zeros((n, 2), np.float32), np.arange(n, dtype=np.int64),
                                            np.ones(n, np.float32), np.zeros(n, np.int64), np.ones(n, bool))},
                           {"city": "x"})

    path = ds(3).save(tmp_path / "dataset")
    assert len(DemoDataset.load(path).agents["A"]) == 3
    ds(5).save(path)  # an existing dataset is replaced, nothing else is left next to it
    again = DemoDataset.load(path)
    assert len(again.agents["A"]) == 5 and again.metadata["city"] == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]
    assert sorted(p.name for p in path.iterdir()) == ["demos.json", "demos.npz"]
