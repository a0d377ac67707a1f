"""Our default observation and reward equal sumo-rl's SumoEnvironment under identical actions.

sumo-rl runs over TraCI (a separate SUMO process), ours over libsumo in this process, in lock
step on the same network, routes and seed, with the same random actions.
"""

from __future__ import annotations

import numpy as np
import pytest

from leed_traffic import sumo_env  # noqa: F401 - sets SUMO_HOME before sumo_rl
from leed_traffic.cities import resco_dir
from leed_traffic.env import EnvConfig, LeedTrafficEnv
from leed_traffic.scenario import scenario_from_files


def _pair(net, route, begin, seconds, delta, yellow, min_green, reward="diff-waiting-time"):
    from sumo_rl import SumoEnvironment

    theirs = SumoEnvironment(
        net_file=str(net), route_file=str(route), begin_time=begin, num_seconds=seconds,
        delta_time=delta, yellow_time=yellow, min_green=min_green, sumo_seed=7,
        use_gui=False, single_agent=False, reward_fn=reward, sumo_warnings=False,
    )
    scen = scenario_from_files(net, [route], begin=begin, end=begin + seconds)
    ours = LeedTrafficEnv(scen, EnvConfig(delta_time=delta, yellow_time=yellow, min_green=min_green,
                                          reward=reward, seed=7, time_to_teleport=-1))
    return theirs, ours


@pytest.mark.parametrize(
    "case",
    [
        ("4x4-Lucas", "4x4.net.xml", "4x4c1c2c1c2.rou.xml", 0, 300, 5, 2, 5, "diff-waiting-time"),
        ("RESCO/cologne8", "cologne8.net.xml", "cologne8.rou.xml", 25200, 500, 10, 3, 5, "diff-waiting-time"),
        ("RESCO/cologne8", "cologne8.net.xml", "cologne8.rou.xml", 25200, 300, 5, 2, 10, "pressure"),
        ("RESCO/cologne8", "cologne8.net.xml", "cologne8.rou.xml", 25200, 300, 5, 2, 10, "queue"),
    ],
    ids=["grid4x4-lucas", "cologne8", "cologne8-pressure", "cologne8-queue"],
)
def test_matches_sumo_rl(case):
    folder, net, route, begin, seconds, delta, yellow, min_green, reward = case
    base = resco_dir().parent / folder
    theirs, ours = _pair(base / net, base / route, begin, seconds, delta, yellow, min_green, reward)
    try:
        their_obs = theirs.reset(seed=7)
        our_obs, _ = ours.reset(seed=7)
        assert sorted(their_obs) == sorted(our_obs) == sorted(ours.possible_agents)
        for a in ours.possible_agents:
            assert ours.action_space(a).n == theirs.action_spaces(a).n
            assert ours.observation_space(a).shape == theirs.observation_spaces(a).shape
            np.testing.assert_allclose(our_obs[a], their_obs[a], atol=1e-6)
        rng = np.random.default_rng(0)
        nonzero_rewards = 0
        for step in range(seconds // delta):
            actions = {a: int(rng.integers(ours.action_space(a).n)) for a in ours.possible_agents}
            t_obs, t_rew, t_done, _ = theirs.step(actions)
            o_obs, o_rew, _, o_trunc, _ = ours.step(actions)
            assert ours.sim_time == theirs.sim_step
            for a in ours.possible_agents:
                np.testing.assert_allclose(o_obs[a], t_obs[a], atol=1e-6, err_msg=f"obs {a} step {step}")
                assert o_rew[a] == pytest.approx(t_rew[a], abs=1e-6), f"reward {a} step {step}"
                nonzero_rewards += o_rew[a] != 0
        assert nonzero_rewards > 0, "traffic never reached the lights: the comparison proved nothing"
    finally:
        theirs.close()
        ours.close()
