"""The environment: PettingZoo API, phase rules on real OSM programs, options and errors."""

from __future__ import annotations

import numpy as np
import pytest

from leed_traffic.env import EnvConfig, LeedTrafficEnv, make_env
from leed_traffic.errors import UserError


def test_parallel_api(melbourne):
    from pettingzoo.test import parallel_api_test

    env = LeedTrafficEnv(melbourne, EnvConfig(seconds=200))
    try:
        parallel_api_test(env, num_cycles=30)
    finally:
        env.close()


def test_agents_spaces_and_episode(melbourne):
    env = make_env(melbourne, seconds=120, seed=3)
    try:
        obs, infos = env.reset()
        assert env.agents == list(melbourne.agents) and len(env.agents) == 41
        sizes = {env.observation_space(a).shape[0] for a in env.agents}
        assert len(sizes) > 1, "real intersections have different lane counts"
        for a in env.agents:
            assert env.action_space(a).n >= 2
            assert env.observation_space(a).contains(obs[a])
        steps = 0
        while env.agents:
            obs, rew, term, trunc, info = env.step({a: env.action_space(a).sample() for a in env.agents})
            steps += 1
        assert steps == 120 // 5 and env.sim_time == 120
        assert all(trunc.values()) and not any(term.values())
        # the end-of-episode info: the honest delay (never-inserted vehicles charged) and the rest
        last = info[env.possible_agents[0]]
        assert {"mean_delay", "mean_trip_delay", "vehicles", "never_inserted", "sim_time"} <= set(last)
        assert last["vehicles"] >= last["arrived"] + last["never_inserted"]
    finally:
        env.close()


def test_min_green_and_yellow_are_enforced(melbourne):
    env = make_env(melbourne, seconds=300, delta_time=5, yellow_time=2, min_green=10)
    try:
        env.reset(seed=1)
        a = env.possible_agents[0]
        ts = env.signals[a]
        # at t=0 the switch is not allowed yet (yellow + min green = 12 s since the last change)
        assert env.legal_actions(a) == (0,)
        env.step({a: 1})
        assert ts.green_phase == 0 and env.sim.trafficlight.getRedYellowGreenState(a) == ts.topo.greens[0]
        env.step({a: 1})  # decided at t=5: still too early
        env.step({a: 1})  # decided at t=10: 10 < 12, still too early
        assert ts.green_phase == 0 and env.sim_time == 15
        env.step({a: 1})  # decided at t=15 >= 12: switch, yellow first
        assert env.sim_time == 20 and ts.green_phase == 1
        # yellow lasted exactly yellow_time and now the new green shows
        assert env.sim.trafficlight.getRedYellowGreenState(a) == ts.topo.greens[1]
        assert env.sim.trafficlight.getProgram(a) == "leed", "agent program installed under its own id"
        assert env.legal_actions(a) == (1,)
        st = env.intersection_state(a)
        assert st.current_phase == 1 and st.legal_actions == (1,) and st.time_in_phase == 5
    finally:
        env.close()


def test_yellow_is_shown_between_greens(melbourne):
    env = make_env(melbourne, seconds=60, delta_time=5, yellow_time=3, min_green=0)
    try:
        env.reset(seed=0)
        a = env.possible_agents[0]
        ts = env.signals[a]
        env.step({a: 0})  # t=5
        seen = []
        ts.set_next_phase(1, env.sim_time)
        for t in range(6, 11):
            env.sim.simulationStep(t)
            ts.on_time(float(t)) if t == 8 else None
            seen.append(env.sim.trafficlight.getRedYellowGreenState(a))
        assert "y" in seen[0] and "y" in seen[1] and seen[2] == ts.topo.greens[1]
    finally:
        env.close()


def test_max_green_forces_a_change_when_enforced(melbourne):
    env = make_env(melbourne, seconds=200, delta_time=5, yellow_time=2, min_green=5,
                   max_green=20, enforce_max_green=True)
    try:
        env.reset(seed=0)
        a = env.possible_agents[0]
        for _ in range(6):  # hold phase 0 for 30 s
            env.step({a: 0})
        assert env.signals[a].green_phase != 0
    finally:
        env.close()


def test_actuated_lights_do_not_hang(melbourne, tmp_path):
    """An actuated program is loaded as the active one; the agent program is installed beside it."""
    from leed_traffic.controllers import Actuated

    opts = Actuated().prepare(melbourne, tmp_path, 0)
    env = make_env(melbourne, seconds=100, additional_files=opts["additional_files"])
    try:
        obs, _ = env.reset(seed=0)
        while env.agents:
            env.step({a: env.action_space(a).sample() for a in env.agents})
        assert env.sim_time == 100
    finally:
        env.close()


def test_reward_and_observation_are_swappable(melbourne):
    calls = []

    def my_reward(ts, env):
        calls.append(ts.id)
        return 1.0

    env = make_env(melbourne, seconds=20, reward=my_reward, observation="pressure")
    try:
        obs, _ = env.reset(seed=0)
        a = env.possible_agents[0]
        n = env.signals[a].num_green_phases
        assert obs[a].shape[0] == n + 1 + 2 * len(env.signals[a].in_idx) + n
        _, rew, *_ = env.step({})
        assert set(rew.values()) == {1.0} and len(calls) == 41
    finally:
        env.close()
    for name in ("pressure", "queue", "queue-backlog"):
        env = make_env(melbourne, seconds=60, reward=name, observation="backlog" if name == "queue-backlog" else "default")
        try:
            obs, _ = env.reset(seed=0)
            for _ in range(12):
                obs, rew, *_ = env.step({})
            assert any(v != 0 for v in rew.values())
            if name.startswith("queue"):
                assert all(v <= 0 for v in rew.values())
            if name == "queue-backlog":  # default layout + backlog per incoming edge + out-lane density, queue
                for a, ts in env.signals.items():
                    n = ts.num_green_phases + 1 + 2 * len(ts.in_idx) + len(ts.topo.in_edges) + 2 * len(ts.out_idx)
                    assert obs[a].shape == (n,) and env.observation_space(a).contains(obs[a])
        finally:
            env.close()


@pytest.mark.parametrize("opts, fragment", [
    ({"delta_time": 2, "yellow_time": 2}, "delta_time"),
    ({"reward": "happiness"}, "Unknown reward"),
    ({"observation": "vibes"}, "Unknown observation"),
    ({"speed": 3}, "Unknown environment option"),
])
def test_invalid_options(melbourne, opts, fragment):
    with pytest.raises(UserError, match=fragment):
        make_env(melbourne, **opts)


def test_intersection_state_has_streets_and_movements(melbourne):
    env = make_env(melbourne, seconds=300)
    try:
        env.reset(seed=0)
        for _ in range(40):
            env.step({})
        states = [env.intersection_state(a) for a in env.possible_agents]
        named = [s for s in states if "/" in s.name]
        assert len(named) > 10
        for s in states:
            assert len(s.phases) == env.action_space(s.agent_id).n
            assert all(p.movements for p in s.phases)
            assert {m.turn for p in s.phases for m in p.movements} <= {"through", "left", "right", "u-turn"}
        assert sum(ap.queued + ap.approaching for s in states for ap in s.approaches) > 0
        assert states == [env.intersection_state(a) for a in env.possible_agents], "deterministic"
    finally:
        env.close()
