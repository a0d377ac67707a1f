"""Metrics on a hand-checked case; every classical controller through the evaluation path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from leed_traffic.metrics import episode_metrics

ROUTES = """<routes>
  <vehicle id="a" depart="10.00"><route edges="e1 e2"/></vehicle>
  <vehicle id="b" depart="20.00"><route edges="e1 e2"/></vehicle>
  <trip id="c" depart="30.00" from="e1" to="e2"/>
  <vehicle id="d" depart="50.00"><route edges="e1 e2"/></vehicle>
  <vehicle id="late" depart="150.00"><route edges="e1 e2"/></vehicle>
  <vehicle id="early" depart="5.00"><route edges="e1 e2"/></vehicle>
</routes>
"""
# a arrived (timeLoss 12 + departDelay 3 = 15); b unfinished (timeLoss 40, departDelay 0);
# c never inserted (a <trip>: charged 100 - 30 = 70); d never inserted (<vehicle>: 100 - 50 = 50);
# 'late' departs after the end (not counted); 'early' departs before begin (not counted).
TRIPINFO = """<tripinfos>
  <tripinfo id="a" depart="13.00" departDelay="3.00" arrival="60.00" duration="47.00" waitingTime="8.00" timeLoss="12.00"/>
  <tripinfo id="b" depart="20.00" departDelay="0.00" arrival="-1" duration="80.00" waitingTime="30.00" timeLoss="40.00"/>
</tripinfos>
"""
SUMMARY = """<summary><step time="0" halting="0"/><step time="1" halting="2"/><step time="2" halting="4"/></summary>"""
STATS = """<statistics><teleports total="3" jam="3" yield="0" wrongLane="0"/></statistics>"""


def test_hand_checked_metrics(tmp_path):
    (tmp_path / "r.xml").write_text(ROUTES)
    (tmp_path / "t.xml").write_text(TRIPINFO)
    (tmp_path / "s.xml").write_text(SUMMARY)
    (tmp_path / "st.xml").write_text(STATS)
    m = episode_metrics(tmp_path / "t.xml", [tmp_path / "r.xml"], begin=8, end=100,
                        summary=tmp_path / "s.xml", statistics=tmp_path / "st.xml")
    assert m.vehicles == 4 and m.never_inserted == 2
    assert m.mean_delay == pytest.approx((15 + 40 + 70 + 50) / 4)
    assert m.resco_delay == pytest.approx((15 + 40 + 50) / 3)  # RESCO ignores never-inserted <trip>s
    assert m.mean_travel_time == pytest.approx((47 + 80) / 2)
    assert m.mean_waiting_time == pytest.approx((8 + 30) / 2)
    assert m.throughput == 1 and m.teleports == 3
    assert m.mean_queue == pytest.approx(2.0)


def test_all_classical_controllers_evaluate(melbourne, tmp_path):
    from leed_traffic.evaluate import ALL_CLASSICAL, evaluate, summarize

    df = evaluate(melbourne, ALL_CLASSICAL, episodes=1, seconds=600, out=tmp_path, progress=False)
    csv = pd.read_csv(tmp_path / "metrics.csv")
    assert list(csv.columns[:8]) == ["controller", "seed", "mean_delay", "mean_travel_time",
                                     "mean_waiting_time", "mean_queue", "throughput", "teleports"]
    assert list(csv.controller) == list(ALL_CLASSICAL) and set(csv.seed) == {melbourne.eval_seeds[0]}
    assert (csv.mean_delay > 0).all() and (csv.throughput > 0).all()
    # program controllers really change the signal timing: not all delays are equal
    assert csv.mean_delay.nunique() >= 4
    s = summarize(df)
    assert set(s.controller) == set(ALL_CLASSICAL) and (s.mean_delay_std == 0).all()


def test_held_out_seeds_continue_after_the_scenarios_own():
    from types import SimpleNamespace

    from leed_traffic.evaluate import held_out_seeds

    scen = SimpleNamespace(eval_seeds=(100, 101, 102))
    assert held_out_seeds(scen, 5) == [100, 101, 102, 103, 104]  # the 4th episode is 103
    assert held_out_seeds(scen, 2) == [100, 101]
    assert held_out_seeds(scen, 3, first=0) == [0, 1, 2]
    assert held_out_seeds(SimpleNamespace(eval_seeds=(7, 3)), 4) == [7, 3, 4, 5]
    assert held_out_seeds(scen, 0) == []


def test_seeds_change_the_episode(melbourne, tmp_path):
    from leed_traffic.evaluate import evaluate

    df = evaluate(melbourne, ["fixed"], episodes=2, seconds=600, seed=0, progress=False)
    assert list(df.seed) == [0, 1] and df.mean_delay.iloc[0] != df.mean_delay.iloc[1]
    again = evaluate(melbourne, ["fixed"], episodes=1, seconds=600, seed=0, progress=False)
    assert again.mean_delay.iloc[0] == df.mean_delay.iloc[0], "same seed, same result"


def test_max_pressure_and_greedy_pick_the_argmax(melbourne):
    from leed_traffic.controllers import Greedy, MaxPressure
    from leed_traffic.env import make_env

    env = make_env(melbourne, seconds=400)
    try:
        obs, _ = env.reset(seed=0)
        for _ in range(60):
            obs, *_ = env.step({})
        mp, gr = MaxPressure().act(env, obs), Greedy().act(env, obs)
        for a, ts in env.signals.items():
            p, q = env.phase_pressures(ts), env.phase_queues(ts)
            assert p[mp[a]] == p.max() and q[gr[a]] == q.max()
            if p[ts.green_phase] == p.max():
                assert mp[a] == ts.green_phase  # ties keep the current phase
        st = env.intersection_state(env.possible_agents[0])
        ts = env.signals[env.possible_agents[0]]
        assert [ph.pressure for ph in st.phases] == list(env.phase_pressures(ts))
        assert [ph.queue for ph in st.phases] == list(env.phase_queues(ts).astype(int))
    finally:
        env.close()


def test_resco_scenario_loads_from_the_package(tmp_path):
    from leed_traffic.evaluate import evaluate
    from leed_traffic.scenario import build_scenario

    s = build_scenario("cologne1")
    assert "sumo_rl" in str(s.net_file) and s.n_agents == 1 and (s.begin, s.end) == (25200, 28800)
    assert (s.delta_time, s.yellow_time) == (10, 3)
    df = evaluate(s, ["fixed", "max-pressure"], episodes=1, seconds=600, seed=1, progress=False)
    assert (df.mean_delay > 0).all() and (df.vehicles > 50).all()
    assert not (tmp_path / "cologne1.net.xml").exists()
    assert not any(p.name.endswith(".net.xml") for p in s.dir.iterdir()), "RESCO files are not copied"
