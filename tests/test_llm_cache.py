"""Answer cache: hits, keys, corrupt rows, several processes."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

from leed_traffic.llm.base import LLMDemonstrator, RawAnswer
from leed_traffic.llm.cache import AnswerCache, cache_key
from llm_states import crossing


def test_put_get_and_key_parts(tmp_path):
    c = AnswerCache(tmp_path / "a.sqlite")
    c.put("claude", "m1", "v1", "text", 1, "because")
    assert c.get("claude", "m1", "v1", "text").phase == 1
    assert c.get("claude", "m1", "v1", "text").reason == "because"
    for other in [("openai", "m1", "v1", "text"), ("claude", "m2", "v1", "text"),
                  ("claude", "m1", "v2", "text"), ("claude", "m1", "v1", "text2")]:
        assert c.get(*other) is None
    c.close()
    # persisted
    assert AnswerCache(tmp_path / "a.sqlite").get("claude", "m1", "v1", "text").phase == 1


def test_wal_mode(tmp_path):
    AnswerCache(tmp_path / "a.sqlite").put("b", "m", "v", "t", 0, "")
    mode = sqlite3.connect(tmp_path / "a.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_corrupt_row_is_ignored_and_overwritten(tmp_path):
    path = tmp_path / "a.sqlite"
    c = AnswerCache(path)
    c.put("b", "m", "v", "t", 0, "ok")
    raw = sqlite3.connect(path)
    raw.execute("UPDATE answers SET phase = 'garbage' WHERE key = ?", (cache_key("b", "m", "v", "t"),))
    raw.commit()
    assert c.get("b", "m", "v", "t") is None
    c.put("b", "m", "v", "t", 1, "again")
    assert c.get("b", "m", "v", "t").phase == 1


def test_unreadable_file_falls_back_to_memory(tmp_path):
    path = tmp_path / "a.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    c = AnswerCache(path)
    c.put("b", "m", "v", "t", 1, "")
    assert c.get("b", "m", "v", "t").phase == 1


def _writer(path: str, start: int) -> None:
    c = AnswerCache(path)
    for i in range(start, start + 50):
        c.put("b", "m", "v", f"t{i}", i % 3, "")


def test_several_processes_share_one_cache(tmp_path):
    path = str(tmp_path / "a.sqlite")
    AnswerCache(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, k * 50)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    c = AnswerCache(path)
    assert len(c) == 100
    assert c.get("b", "m", "v", "t73").phase == 73 % 3


class CountingDemo(LLMDemonstrator):
    backend = "fake"
    model = "fake-1"

    def __init__(self, cache, answer=0):
        super().__init__(cache)
        self.asked: list[str] = []
        self.answer = answer

    def _ask(self, states, texts):
        self.asked += list(texts)
        return [RawAnswer(self.answer, "r") for _ in states]


def test_demonstrator_uses_cache_on_rerun(tmp_path):
    path = tmp_path / "a.sqlite"
    states = [crossing("A"), crossing("B"), crossing("A")]  # A twice: asked once
    d1 = CountingDemo(AnswerCache(path))
    first = d1.decide(states)
    assert len(d1.asked) == 2 and d1.stats.cache_hits == 1
    d2 = CountingDemo(AnswerCache(path))  # a re-run in a new process: all hits
    assert d2.decide(states) == first
    assert d2.asked == [] and d2.stats.cache_hits == 3 and d2.stats.calls == 0
    # feedback changes the text, hence the key
    d2.decide(states, {"A": "worse than fixed time"})
    assert len(d2.asked) == 1


def test_invalid_answers_are_not_cached(tmp_path):
    d = CountingDemo(AnswerCache(tmp_path / "a.sqlite"), answer=7)
    out = d.decide([crossing("A")])
    assert out[0].valid is False and out[0].phase == 1  # held current phase
    d.decide([crossing("A")])
    assert len(d.asked) == 2  # asked again, not served from cache
