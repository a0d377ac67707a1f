"""Textual intersection state: content, determinism, feedback, batch prompt."""

from __future__ import annotations

import dataclasses

import pytest

from leed_traffic.llm.text import PROMPT_VERSION, SYSTEM_PROMPT, render_batch, render_state
from llm_states import crossing


def test_render_names_streets_movements_and_traffic():
    text = render_state(crossing())
    assert text.startswith("Intersection J1: Mannerheimintie / Kaivokatu")
    # each phase once, as its movements grouped per approach
    assert "Phase 0: from Mannerheimintie (north) → Mannerheimintie through, → Kaivokatu left (yields); " in text
    assert "from Mannerheimintie (south) → Mannerheimintie through, → Kaivokatu right [12 queued" in text
    # the duplicated lane movement is said once; unnamed roads get a readable name
    assert text.count("from Kaivokatu (east) → Kaivokatu through") == 1
    assert "from unnamed road (west) → Mannerheimintie right" in text
    # per-approach traffic
    assert "- from Mannerheimintie (north, 2 lanes): 6 queued, 3 approaching, waiting 41 s" in text
    assert "- from Kaivokatu (east): 0 queued, 0 approaching, waiting 0 s" in text
    assert "Now showing phase 1 for 30 s; min green 10 s, max green 60 s." in text
    assert "Legal now: phases 0, 1." in text
    assert text.count("- Phase ") == 2


def test_render_is_deterministic_and_ignores_sim_time():
    a = crossing()
    b = dataclasses.replace(crossing(), time=7200.0)
    assert render_state(a) == render_state(crossing())
    assert render_state(a) == render_state(b)  # time is not decision-relevant: keeps cache hits
    assert render_state(a) != render_state(crossing(queues=(11, 0)))


def test_only_current_phase_legal_and_yellow_are_said():
    s = dataclasses.replace(crossing(legal=(1,), time_in_phase=3.0), is_yellow=True)
    text = render_state(s)
    assert "Legal now: only phase 1 (a change is not allowed yet)." in text
    assert "switching (yellow) to phase 1" in text


def test_feedback_is_appended_only_when_given():
    assert "Feedback" not in render_state(crossing())
    text = render_state(crossing(), "  queues grew on the north approach ")
    assert text.endswith("Feedback from the previous round: queues grew on the north approach")


def test_batch_prompt_lists_every_intersection_with_feedback():
    states = [crossing("A"), crossing("B", queues=(0, 7))]
    prompt = render_batch(states, {"B": "worse than fixed time"})
    assert "each of these 2 intersections" in prompt
    assert "### 1.\nIntersection A:" in prompt and "### 2.\nIntersection B:" in prompt
    assert prompt.count("Feedback from the previous round") == 1
    assert prompt.rstrip().endswith("Feedback from the previous round: worse than fixed time")


def test_batch_prompt_names_answer_keys_that_are_not_the_id():
    states = [crossing("A"), crossing("B#2")]
    prompt = render_batch(states, keys=["A", "B_2_0123abcd"])
    assert prompt.count("under the key") == 1
    assert prompt.endswith('Answer for this intersection under the key "B_2_0123abcd".')
    assert render_batch(states, keys=["A", "B#2"]) == render_batch(states)  # ids as keys: no note


def test_prompt_version_and_system_prompt():
    assert PROMPT_VERSION and isinstance(PROMPT_VERSION, str)
    assert "legal" in SYSTEM_PROMPT and "waiting time" in SYSTEM_PROMPT


@pytest.fixture(scope="module")
def helsinki_env():
    try:
        from leed_traffic.env import make_env

        env = make_env("helsinki", seconds=120)
    except Exception as e:  # noqa: BLE001 - the scenario may not be built on this machine
        pytest.skip(f"helsinki scenario unavailable: {e}")
    env.reset(seed=0)
    for _ in range(10):
        env.step({})
    yield env
    env.close()


def test_real_helsinki_junction(helsinki_env):
    """A known junction of the bundled city: its street names and movement counts in the text."""
    env = helsinki_env
    s = env.intersection_state("1371708589")
    text = render_state(s)
    assert text.startswith("Intersection 1371708589: Liisankatu / Snellmaninkatu")
    assert text.count("- Phase ") == len(s.phases) == 2
    # phase 0 serves Liisankatu from east and west, 4 movements each (left, right, through, u-turn)
    phase0 = next(line for line in text.splitlines() if line.startswith("- Phase 0:"))
    assert "from Liisankatu (east)" in phase0 and "from Liisankatu (west)" in phase0
    assert phase0.count("→") == 8
    assert text.count("- from ") == len(s.approaches) == 4
    assert render_state(env.intersection_state("1371708589")) == text  # same state, same text
