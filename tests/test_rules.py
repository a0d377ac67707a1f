"""The shared max-pressure / longest-queue rule (``leed_traffic.rules``) on hand-computable cases,
and the two callers that use it: the classical controllers (all phases, legality left to the env)
and the reference experts (legal phases only). No SUMO needed except for the network reader."""

from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace

import numpy as np
import pytest

from leed_traffic.controllers import Greedy, MaxPressure
from leed_traffic.llm import make_demonstrator
from leed_traffic.rules import METRICS, choose_phase, env_scores, state_scores
from leed_traffic.state import IntersectionState, PhaseInfo


# ---------------------------------------------------------------------------- choose_phase
@pytest.mark.parametrize("scores, current, expected", [
    ([1.0, 5.0, 5.0], 0, (1, 5.0)),      # tie between 1 and 2, current not among them: lowest index
    ([1.0, 5.0, 5.0], 2, (2, 5.0)),      # current ties the best: keep it
    ([1.0, 5.0, 5.0], 1, (1, 5.0)),
    ([3.0, 3.0, 3.0], 1, (1, 3.0)),      # all equal: keep
    ([-3.0, -1.0, -2.0], 0, (1, -1.0)),  # negative pressures
    ([0.0, 0.0], 1, (1, 0.0)),
    ([2.0, 7.0], 0, (1, 7.0)),
])
def test_choose_phase_all_phases(scores, current, expected):
    assert choose_phase(scores, current) == expected
    assert choose_phase(np.array(scores), current) == expected  # the env's arrays
    assert choose_phase(dict(enumerate(scores)), current) == expected  # a state's mapping


def test_choose_phase_legal_phases_only():
    scores = {0: 9.0, 1: 2.0, 2: 2.0}
    # current is the best but not legal (max green reached): the best legal one, lowest index on ties
    assert choose_phase(scores, 0, legal=(1, 2)) == (1, 2.0)
    assert choose_phase(scores, 0, legal=(2, 1)) == (1, 2.0)  # order of legal does not matter
    # before min green only the current phase is legal: hold, whatever the scores
    assert choose_phase(scores, 1, legal=(1,)) == (1, 2.0)
    # a legal current phase that ties the best legal one is kept
    assert choose_phase(scores, 2, legal=(1, 2)) == (2, 2.0)
    # without legal, the same illegal best is chosen: the env decides what happens to it
    assert choose_phase(scores, 0) == (0, 9.0)
    # legal phases without a score are no candidates; none at all: hold
    assert choose_phase(scores, 1, legal=(1, 5)) == (1, 2.0)
    assert choose_phase(scores, 1, legal=(5,)) == (1, 0.0)
    assert choose_phase(scores, 1, legal=()) == (1, 0.0)
    assert choose_phase({}, 0) == (0, 0.0)


def _state(queues, pressures, current, legal) -> IntersectionState:
    phases = tuple(PhaseInfo(i, "G" * 4, (), queue=q, pressure=p)
                   for i, (q, p) in enumerate(zip(queues, pressures)))
    return IntersectionState("A", "A", 0.0, phases, (), current, 30.0, 5.0, 50.0, tuple(legal))


def test_state_scores_read_the_phase_numbers():
    s = _state((3, 0, 7), (1.5, -2.0, 4.0), 0, (0, 1, 2))
    assert state_scores(s, "queue") == {0: 3.0, 1: 0.0, 2: 7.0}
    assert state_scores(s, "pressure") == {0: 1.5, 1: -2.0, 2: 4.0}
    with pytest.raises(ValueError):
        state_scores(s, "delay")
    assert METRICS == {"max-pressure": "pressure", "longest-queue": "queue"}


# ---------------------------------------------------------------------------- the two callers
class _FakeEnv:
    """What the classical controllers read: signals with a current phase, per-phase scores."""

    def __init__(self, cases: dict[str, tuple[int, list[float], list[float]]]) -> None:
        self.signals = {a: SimpleNamespace(green_phase=cur) for a, (cur, _, _) in cases.items()}
        self._p = {a: np.array(p, dtype=float) for a, (_, p, _) in cases.items()}
        self._q = {a: np.array(q, dtype=float) for a, (_, _, q) in cases.items()}

    def _agent(self, ts) -> str:
        return next(a for a, t in self.signals.items() if t is ts)

    def phase_pressures(self, ts):
        return self._p[self._agent(ts)]

    def phase_queues(self, ts):
        return self._q[self._agent(ts)]


CASES = {  # agent: (current phase, pressures, queues)
    "tie_keeps": (2, [4.0, 1.0, 4.0], [0.0, 6.0, 6.0]),
    "tie_lowest": (1, [0.0, 3.0, 5.0, 5.0], [2.0, 1.0, 2.0, 0.0]),
    "negative": (0, [-4.0, -1.0, -1.0], [1.0, 1.0, 1.0]),
    "switch": (0, [1.0, 8.0], [9.0, 2.0]),
}
EXPECTED = {  # agent: (max-pressure, longest-queue)
    "tie_keeps": (2, 2), "tie_lowest": (2, 0), "negative": (1, 0), "switch": (1, 0),
}


def test_env_scores_are_the_env_phase_numbers():
    env = _FakeEnv(CASES)
    ts = env.signals["switch"]
    assert list(env_scores(env, ts, "pressure")) == [1.0, 8.0]
    assert list(env_scores(env, ts, "queue")) == [9.0, 2.0]
    with pytest.raises(ValueError):
        env_scores(env, ts, "delay")


def test_controllers_and_experts_agree_when_every_phase_is_legal():
    env = _FakeEnv(CASES)
    mp_ctrl, gr_ctrl = MaxPressure().act(env, {}), Greedy().act(env, {})
    mp_exp, lq_exp = make_demonstrator("max-pressure"), make_demonstrator("longest-queue")
    for a, (cur, p, q) in CASES.items():
        s = _state([int(x) for x in q], p, cur, range(len(p)))
        assert (mp_ctrl[a], gr_ctrl[a]) == EXPECTED[a], a
        assert mp_exp.decide([s])[0].phase == mp_ctrl[a], a
        assert lq_exp.decide([s])[0].phase == gr_ctrl[a], a
        assert all(isinstance(v, int) for v in (mp_ctrl[a], gr_ctrl[a]))


def test_legality_is_where_controllers_and_experts_differ():
    # max green reached on phase 0, which still has the largest pressure: legal = (1, 2)
    env = _FakeEnv({"A": (0, [9.0, 2.0, 3.0], [5.0, 1.0, 1.0])})
    s = _state((5, 1, 1), (9.0, 2.0, 3.0), 0, (1, 2))
    # the controller keeps its (illegal) best; the env's set_next_phase then forces phase 1
    assert MaxPressure().act(env, {}) == {"A": 0}
    assert Greedy().act(env, {}) == {"A": 0}
    # the experts answer the best legal phase, so the answer is valid
    d = make_demonstrator("max-pressure").decide([s])[0]
    assert (d.phase, d.valid) == (2, True) and "switch to phase 2: largest pressure (3)" == d.reason
    d = make_demonstrator("longest-queue").decide([s])[0]
    assert (d.phase, d.valid) == (1, True) and "largest queue (1)" in d.reason
    # before min green only the current phase is legal: the experts say so without scoring
    locked = dataclasses.replace(s, legal_actions=(0,))
    assert make_demonstrator("max-pressure").decide([locked])[0].reason == "only legal phase"


# ---------------------------------------------------------------------------- network reader
def test_read_net_is_cached_until_the_file_changes(tmp_path):
    from leed_traffic.netfile import first_program, program_states, read_net, tls_programs
    from leed_traffic.network import controllable_lights, green_states
    from leed_traffic.scenario import build_scenario

    src = build_scenario("cologne1").net_file
    net_file = tmp_path / "net.net.xml"
    net_file.write_bytes(src.read_bytes())
    net = read_net(net_file)
    assert read_net(str(net_file)) is net  # str or Path, one parse
    progs = dict(tls_programs(net_file))
    assert progs and all(first_program(net, t) is p for t, p in progs.items())
    agents = controllable_lights(net_file)
    assert agents == sorted(t for t in progs if len(green_states(program_states(net, t))) >= 2)
    st = net_file.stat()
    os.utime(net_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert read_net(net_file) is not net  # rewritten (here: touched) -> read again
