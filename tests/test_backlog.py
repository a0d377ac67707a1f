"""What the metric counts (issue 12): the insertion backlog and downstream spillback an agent sees,
the ``queue-backlog`` reward, and the honest delay the env reports at the episode's end.

A hand-made crossing, one signal C, built with netconvert in a fraction of a second::

    Z --far (600 m)--> A --up (200 m)--> W --in (100 m)--> C --out (60 m)--> E
                                                           ^ |
                                                 N --nin---+ +--sout--> S

At t=0 bursts of vehicles are due on ``in``, ``up``, ``far`` and ``nin``: far more than can be
inserted (one per lane every few seconds), so SUMO holds the rest in its insertion queue. A
vehicle with a stop on ``out`` blocks the exit, so the vehicles let through halt there (spillback).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from leed_traffic import sumo_env
from leed_traffic.env import BACKLOG_REACH_M, LeedTrafficEnv, make_env
from leed_traffic.metrics import episode_metrics, honest_mean_delay
from leed_traffic.observations import BACKLOG_CLIP, BACKLOG_SCALE, DefaultObservation
from leed_traffic.rewards import SPILLBACK_WEIGHT
from leed_traffic.scenario import scenario_from_files

NODES = """<nodes>
  <node id="Z" x="-900" y="0"/> <node id="A" x="-300" y="0"/> <node id="W" x="-100" y="0"/>
  <node id="C" x="0" y="0" type="traffic_light"/> <node id="E" x="60" y="0"/>
  <node id="N" x="0" y="100"/> <node id="S" x="0" y="-100"/>
</nodes>"""
EDGES = """<edges>
  <edge id="far" from="Z" to="A" numLanes="1" speed="13.9"/>
  <edge id="up" from="A" to="W" numLanes="1" speed="13.9"/>
  <edge id="in" from="W" to="C" numLanes="1" speed="13.9"/>
  <edge id="out" from="C" to="E" numLanes="1" speed="13.9"/>
  <edge id="nin" from="N" to="C" numLanes="1" speed="13.9"/>
  <edge id="sout" from="C" to="S" numLanes="1" speed="13.9"/>
</edges>"""
BURST = {"in": ("in out", 30), "up": ("up in out", 20), "far": ("far up in out", 20), "nin": ("nin sout", 20)}


def _routes() -> str:
    rows = ['<routes>', '  <vType id="car" length="5" minGap="2.5"/>',
            '  <vehicle id="blocker" type="car" depart="0" departPos="0">',
            '    <route edges="out"/><stop lane="out_0" endPos="50" duration="10000"/>', '  </vehicle>']
    for name, (edges, n) in BURST.items():
        rows += [f'  <vehicle id="{name}{k}" type="car" depart="0"><route edges="{edges}"/></vehicle>' for k in range(n)]
    return "\n".join(rows + ["</routes>\n"])


@pytest.fixture(scope="module")
def crossing(tmp_path_factory):
    d = tmp_path_factory.mktemp("crossing")
    (d / "c.nod.xml").write_text(NODES)
    (d / "c.edg.xml").write_text(EDGES)
    (d / "c.rou.xml").write_text(_routes())
    subprocess.run([sumo_env.sumo_binary("netconvert"), "-n", str(d / "c.nod.xml"), "-e", str(d / "c.edg.xml"),
                    "--no-turnarounds", "-o", str(d / "c.net.xml")], check=True, capture_output=True)
    scen = scenario_from_files(d / "c.net.xml", [d / "c.rou.xml"], begin=0, end=120)
    assert scen.agents == ("C",)
    return scen


def _west_green(env: LeedTrafficEnv) -> int:
    topo = env.signals["C"].topo
    k = next(i for i, (li, lo) in enumerate(topo.links) if li == "in_0" and lo == "out_0")
    return next(p for p, g in enumerate(topo.greens) if g[k] in "Gg")


def _halting(sim, lanes) -> int:
    return sum(sim.lane.getLastStepHaltingNumber(ln) for ln in lanes)


def test_backlog_equals_sumo_pending_per_approach(crossing):
    env = make_env(crossing, observation="backlog", reward="queue-backlog", delta_time=5, yellow_time=2)
    try:
        obs, _ = env.reset(seed=0)
        ts = env.signals["C"]
        assert sorted(ts.topo.in_edges) == ["in", "nin"]
        west = _west_green(env)
        pend = env.sim.edge.getPendingVehicles
        for _ in range(3):
            obs, *_ = env.step({"C": west})
            backlog = dict(zip(ts.topo.in_edges, env.backlog()[ts.backlog_idx]))
            # vehicles waiting on `up` (200 m upstream, an unsignalised junction between) belong
            # to the agent's `in` approach; those on `far` start > BACKLOG_REACH_M away: nobody's
            assert backlog["in"] == len(pend("in")) + len(pend("up"))
            assert backlog["nin"] == len(pend("nin"))
            assert len(pend("up")) > 0 and len(pend("far")) > 0 and backlog["nin"] > 0
            assert env.backlog().sum() == len(env.sim.simulation.getPendingVehicles()) - len(pend("far"))
        # the observation carries it: default layout, then backlog / 10 per incoming edge
        n_def = ts.num_green_phases + 1 + 2 * len(ts.in_idx)
        extras = obs["C"][n_def:]
        assert obs["C"].shape == env.observation_space("C").shape == (n_def + 2 + 2 * len(ts.out_idx),)
        assert env.observation_space("C").contains(obs["C"])
        np.testing.assert_allclose(extras[:2], np.minimum(env.backlog()[ts.backlog_idx] / BACKLOG_SCALE, BACKLOG_CLIP))
        np.testing.assert_array_equal(obs["C"][:n_def], DefaultObservation()(ts, env))
        np.testing.assert_allclose(extras[2:], np.concatenate([env.lanes.density[ts.out_idx], env.lanes.queue[ts.out_idx]]),
                                   rtol=1e-6)
    finally:
        env.close()


def test_far_departures_and_other_lights_are_not_counted(crossing):
    env = make_env(crossing, observation="backlog")
    bl = env.insertion_backlog
    slot_in = bl.slot_of_edge["in"]
    assert bl.slot(("in", "out")) == bl.slot(("up", "in", "out")) == slot_in
    assert bl.slot(("far", "up", "in", "out")) == -1, f"far is > {BACKLOG_REACH_M} m before `in`"
    assert bl.slot(("out",)) == bl.slot(("sout",)) == -1, "downstream of every agent"
    bl.stop.add("up")  # as if `up` ended at a light that is not an agent
    assert bl.slot(("up", "in", "out")) == -1


def test_spillback_and_reward_terms(crossing):
    env = make_env(crossing, observation="pressure-backlog", reward="queue-backlog", delta_time=5, yellow_time=2)
    queue_env = None
    try:
        env.reset(seed=0)
        ts = env.signals["C"]
        west = _west_green(env)
        for _ in range(8):  # 40 s of green west-east: the exit fills up behind the stopped blocker
            obs, rew, *_ = env.step({"C": west})
        sim = env.sim
        out_halt = _halting(sim, ts.topo.out_lanes)
        in_halt = _halting(sim, ts.topo.in_lanes)
        backlog = env.backlog()[ts.backlog_idx].sum()
        assert out_halt >= 3, "spillback: vehicles halt on the blocked outgoing lane"
        assert backlog > 0
        assert rew["C"] == pytest.approx(-(in_halt + backlog + SPILLBACK_WEIGHT * out_halt))
        # observation: the outgoing lanes' queue (halting / capacity) shows the blocked exit
        i_out = ts.topo.out_lanes.index("out_0")
        n_out = len(ts.out_idx)
        out_queue = obs["C"][-n_out:]
        assert out_queue[i_out] > 0.3
        assert obs["C"].shape == env.observation_space("C").shape
        # plain `queue` on the same episode sees neither the backlog nor the spillback
        queue_env = make_env(crossing, reward="queue", delta_time=5, yellow_time=2)
        queue_env.reset(seed=0)
        for _ in range(8):
            _, qrew, *_ = queue_env.step({"C": west})
        assert qrew["C"] == -in_halt
        assert rew["C"] < qrew["C"]
    finally:
        env.close()
        if queue_env is not None:
            queue_env.close()


def test_default_path_never_reads_the_backlog(crossing):
    env = make_env(crossing, delta_time=5, yellow_time=2)
    try:
        obs, _ = env.reset(seed=0)
        env.step({})
        assert env.insertion_backlog._time is None, "backlog read though nobody asked for it"
        assert obs["C"].shape == (env.signals["C"].num_green_phases + 1 + 2 * len(env.signals["C"].in_idx),)
    finally:
        env.close()


def test_honest_training_delay_equals_evaluation(crossing, tmp_path):
    """The info at the episode's end carries evaluation's honest delay, and the trainer reads it."""
    from leed_traffic.learn.episodes import DELAY_KEYS, find_number

    trip = tmp_path / "trip.xml"
    env = make_env(crossing, tripinfo=str(trip), delta_time=5, yellow_time=2)
    try:
        env.reset(seed=0)
        while env.agents:
            *_, infos = env.step({"C": _west_green(env)})
    finally:
        env.close()  # writes the tripinfo
    info = infos["C"]
    m = episode_metrics(trip, list(crossing.route_files), env.begin, env.end)
    assert m.never_inserted > 0 and info["never_inserted"] == m.never_inserted
    assert info["vehicles"] == m.vehicles == 1 + sum(n for _, n in BURST.values())
    assert info["mean_delay"] == pytest.approx(m.mean_delay, abs=0.01)
    assert info["mean_delay"] > info["mean_trip_delay"] + 10, "finished trips alone hide the jam"
    assert find_number(infos, DELAY_KEYS) == info["mean_delay"], "the training curve plots the honest delay"


def test_honest_delay_on_a_real_network(melbourne, tmp_path):
    trip = tmp_path / "trip.xml"
    env = make_env(melbourne, seconds=300, tripinfo=str(trip), seed=2)
    rng = np.random.default_rng(0)
    try:
        env.reset()
        while env.agents:
            *_, infos = env.step({a: int(rng.integers(env.action_space(a).n)) for a in env.agents})
    finally:
        env.close()
    info = next(iter(infos.values()))
    m = episode_metrics(trip, [melbourne.route_file(2)], env.begin, env.end)
    assert info["vehicles"] == m.vehicles > 0
    assert info["mean_delay"] == pytest.approx(m.mean_delay, abs=0.01)


def test_honest_mean_delay_definition():
    # two inserted vehicles with 30 s delay in all, one never inserted that waited 90 s
    assert honest_mean_delay(30.0, 2, [90.0]) == pytest.approx(40.0)
    assert honest_mean_delay(0.0, 0, []) == 0.0


def test_phase_observation_rows(crossing):
    """The ``phase`` observation (issue 10): one row of PHASE_FEATURES per green phase, from the
    movements that phase serves, checked against SUMO's own counts."""
    from leed_traffic.observations import COUNT_SCALE, PHASE_FEATURES

    env = make_env(crossing, observation="phase", delta_time=5, yellow_time=2)
    try:
        env.reset(seed=0)
        ts = env.signals["C"]
        west = _west_green(env)
        for _ in range(8):
            obs, *_ = env.step({"C": west})
        rows = obs["C"].reshape(ts.num_green_phases, PHASE_FEATURES)
        assert env.observation_space("C").shape == (ts.num_green_phases * PHASE_FEATURES,)
        sim = env.sim
        for p in range(ts.num_green_phases):
            served = sorted({li for k, (li, lo) in enumerate(ts.topo.links) if li and ts.topo.greens[p][k] in "Gg"})
            outs = sorted({lo for k, (li, lo) in enumerate(ts.topo.links) if li and ts.topo.greens[p][k] in "Gg"})
            assert rows[p, 0] == (1.0 if p == west else 0.0)
            assert rows[p, 4] == pytest.approx(min(_halting(sim, served) / COUNT_SCALE, 10))
            assert rows[p, 5] == pytest.approx(sum(sim.lane.getLastStepVehicleNumber(ln) for ln in served) / COUNT_SCALE)
            assert rows[p, 6] == pytest.approx(_halting(sim, outs) / COUNT_SCALE)
            edges = {ln.rsplit("_", 1)[0] for ln in served}
            waiting = sum(env.backlog()[ts.backlog_idx[ts.topo.in_edges.index(e)]] for e in edges)
            assert rows[p, 7] == pytest.approx(waiting / COUNT_SCALE)
            assert rows[p, 8] == pytest.approx(len(served) / 4)
        np.testing.assert_allclose(rows[:, 3], env.phase_pressures(ts) / COUNT_SCALE, rtol=1e-6)
        w = rows[west]
        assert w[6] > 0.2 and w[7] > 0, "the west phase sees its blocked exit and the vehicles waiting to enter"
    finally:
        env.close()
