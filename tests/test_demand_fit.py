"""Demand for a city without a calibrated definition: fitted to the network (``calibrate``), or
sampled from measured edge counts (``demand.routes_from_counts``, SUMO's routeSampler).

Everything runs on a hand-made OSM grid (3 x 3 signalised crossings, 250 m blocks: converts in
about a second) with 10-minute episodes, in a private cache (``isolated_build``)."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from leed_traffic.cities import resolve_city
from leed_traffic.errors import UserError

EPISODE_END = 600
MELBOURNE_NET_HASH = "0c7e12b10e6a7c57"


def grid_osm(n_roads: int = 3, spacing_m: float = 250.0) -> str:
    """OSM XML of ``n_roads`` x ``n_roads`` two-way streets crossing at signals, each street one
    block longer than the grid at both ends (the dead ends are the network's fringe)."""
    lat0, lon0 = 52.5, 13.4
    dlat, dlon = spacing_m / 111_320, spacing_m / (111_320 * 0.6088)
    k = n_roads + 2

    def nid(i: int, j: int) -> int:
        return 1 + i * k + j

    nodes = []
    for i in range(k):
        for j in range(k):
            if i in (0, k - 1) and j in (0, k - 1):
                continue  # no corners: every street ends in a dead end
            signal = '<tag k="highway" v="traffic_signals"/>' if 0 < i < k - 1 and 0 < j < k - 1 else ""
            nodes.append(f'<node id="{nid(i, j)}" lat="{lat0 + i * dlat:.7f}" lon="{lon0 + j * dlon:.7f}" '
                         f'version="1">{signal}</node>')
    ways = []
    for r in range(1, k - 1):
        for wid, refs in ((100 + 2 * r, [nid(r, j) for j in range(k)]), (101 + 2 * r, [nid(i, r) for i in range(k)])):
            ways.append(f'<way id="{wid}" version="1">' + "".join(f'<nd ref="{n}"/>' for n in refs)
                        + '<tag k="highway" v="secondary"/><tag k="lanes" v="2"/></way>')
    return ("<?xml version='1.0' encoding='UTF-8'?>\n<osm version=\"0.6\" generator=\"leed-traffic tests\">\n"
            + "\n".join(nodes + ways) + "\n</osm>\n")


@pytest.fixture()
def grid_city(tmp_path) -> Path:
    p = tmp_path / "grid.osm"
    p.write_text(grid_osm())
    return p


def _spec(path: Path, **overrides):
    spec = resolve_city(str(path), end=EPISODE_END, **overrides)
    return replace(spec, demand=replace(spec.demand, seeds=(0, 1)))


def _inner_edges(net_file: Path) -> list[str]:
    """Edges between two signalised crossings (every through route can use them)."""
    from leed_traffic.netfile import read_net

    net = read_net(net_file)
    return sorted(e.getID() for e in net.getEdges()
                  if e.getFromNode().getType() == "traffic_light" and e.getToNode().getType() == "traffic_light")


# ------------------------------------------------------------------------------- the fit
FAST = {"tolerance": 0.2, "guess_per_agent": 400.0, "max_trials": 8}
"""A short search: a guess near this grid's capacity, a coarse bracket."""


def test_demand_search_is_deterministic_cached_and_used_by_the_build(isolated_build, grid_city):
    from leed_traffic.calibrate import FitSettings, fit_demand, fit_key, fits_dir
    from leed_traffic.scenario import build_scenario

    spec = _spec(grid_city)
    assert spec.demand.veh_per_hour is None  # an OSM file has no calibrated volume
    settings = FitSettings(**FAST)
    lines: list[str] = []
    fit = fit_demand(spec, settings=settings, progress=lines.append)
    assert not fit.cached and fit.n_agents == 9 and 2 <= fit.steps <= settings.max_trials
    assert lines[0].startswith("fitting the demand of grid") and len(lines) == fit.steps + 2
    passed = [t.veh_per_hour for t in fit.trials if t.passed]
    failed = [t.veh_per_hour for t in fit.trials if not t.passed]
    assert fit.max_ok_veh_per_hour == max(passed)
    assert fit.min_fail_veh_per_hour == min(failed) > fit.max_ok_veh_per_hour
    assert fit.min_fail_veh_per_hour / fit.max_ok_veh_per_hour <= 1 + settings.tolerance
    assert fit.veh_per_hour == round(0.85 * fit.max_ok_veh_per_hour / 10) * 10
    for t in fit.trials:  # the verdict follows the documented rule
        assert t.passed == (t.teleport_fraction < 0.01 and t.never_inserted_early == 0
                            and t.never_inserted - t.never_inserted_early <= 5)

    # the same seed searches the same way; the answer is cached
    again = fit_demand(spec, settings=settings, force=True)

    def strip(f):
        return [dataclasses.replace(t, wall_s=0) for t in f.trials]

    assert strip(again) == strip(fit) and again.veh_per_hour == fit.veh_per_hour
    cached = fit_demand(spec, settings=settings)
    assert cached.cached and cached.veh_per_hour == fit.veh_per_hour and strip(cached) == strip(fit)
    assert [p.name for p in fits_dir().iterdir()] == [f"grid-{fit.key}.json"]
    assert fit_key(spec, fit.net_hash, replace(settings, target=0.8), fit.seed) != fit.key  # settings are keyed
    assert fit_key(spec, fit.net_hash, settings, fit.seed + 1) != fit.key

    # the build takes the (cached) fit: scenario.json says where the volume came from
    sc = build_scenario(spec, fit_settings=settings)
    assert (sc.demand_source, sc.veh_per_hour) == ("fitted", fit.veh_per_hour)
    meta = json.loads((sc.dir / "scenario.json").read_text())
    assert meta["demand"]["veh_per_hour"] == fit.veh_per_hour and meta["demand_fit"]["key"] == fit.key
    assert len(sc.route_files) == 2 and min(sc.vehicles_per_route_file) > 0
    given = build_scenario(replace(spec, demand=replace(spec.demand, veh_per_hour=fit.veh_per_hour)))
    assert given.hash == sc.hash and given.dir == sc.dir  # same volume, same routes: one scenario


def test_bundled_cities_keep_their_calibrated_volume_and_hash():
    from leed_traffic.scenario import _scenario_hash

    spec = resolve_city("melbourne")
    assert spec.demand.veh_per_hour == 900 and spec.counts is None
    assert _scenario_hash(spec, MELBOURNE_NET_HASH) == "012ba95f26caa1c6"
    assert resolve_city("cologne1").demand.veh_per_hour == 2000  # RESCO hashes unchanged too
    assert resolve_city("place:Heidelberg, Germany").demand.veh_per_hour is None


# ------------------------------------------------------------------------------- counts
def _within(got: int, want: float, tol: float = 0.10) -> bool:
    return abs(got - want) <= tol * want


def test_counts_become_routes_that_reproduce_them(isolated_build, grid_city, tmp_path):
    from leed_traffic.demand import counted_on_edges, read_counts, route_edges
    from leed_traffic.network import build_network
    from leed_traffic.scenario import _scenario_hash, build_scenario

    net = build_network(_spec(grid_city))
    edges = _inner_edges(net.net_file)
    assert len(edges) >= 12
    e = edges[::3][:4]
    # CSV counts over the whole episode (no begin/end)
    csv = tmp_path / "counts.csv"
    csv.write_text(f"edge_id,count\n{e[0]},120\n{e[1]},80\n{e[2]},60\n{e[3]},30\n")
    spec = _spec(grid_city, counts=csv)
    sc = build_scenario(spec)
    assert sc.demand_source == "counts" and sc.veh_per_hour is None
    counts = read_counts(csv, 0, EPISODE_END)
    for rf in sc.route_files:
        got = counted_on_edges(rf, counts)
        for c in counts:
            assert _within(got[(c.edge, c.begin, c.end)], c.count), (rf.name, c, got)
        departs = [d for _, d, _ in route_edges(rf)]
        assert departs == sorted(departs) and 0 <= departs[0] and departs[-1] < EPISODE_END
    assert sc.route_files[0].read_text() != sc.route_files[1].read_text()  # one sample per demand seed
    meta = json.loads((sc.dir / "scenario.json").read_text())
    assert meta["demand_source"] == "counts" and meta["counts"]["edges"] == 4
    assert meta["counts"]["max_relative_error"] <= 0.10 and (sc.dir / "counts.csv").read_text() == csv.read_text()

    # the counts' content enters the hash (only when given): other counts, another scenario
    fitted_like = replace(spec, counts=None)
    assert _scenario_hash(fitted_like, net.hash) != sc.hash
    csv2 = tmp_path / "other.csv"
    csv2.write_text(csv.read_text().replace(",120", ",140"))
    assert build_scenario(replace(spec, counts=csv2)).hash != sc.hash

    # edgeData XML with two consecutive intervals
    xml = tmp_path / "edgedata.xml"
    xml.write_text(f'<meandata>\n  <interval id="a" begin="0" end="300">\n    <edge id="{e[0]}" entered="50"/>\n'
                   f'    <edge id="{e[1]}" entered="40"/>\n  </interval>\n  <interval id="b" begin="300" end="600">\n'
                   f'    <edge id="{e[0]}" entered="90"/>\n    <edge id="{e[1]}" entered="20"/>\n  </interval>\n'
                   "</meandata>\n")
    sx = build_scenario(replace(spec, counts=xml))
    counts = read_counts(xml, 0, EPISODE_END)
    assert len(counts) == 4
    got = counted_on_edges(sx.route_files[0], counts)
    for c in counts:
        assert _within(got[(c.edge, c.begin, c.end)], c.count), (c, got)


def test_counts_on_unknown_edges_are_refused_in_one_sentence(isolated_build, grid_city, tmp_path):
    from leed_traffic.network import build_network
    from leed_traffic.scenario import build_scenario

    real = _inner_edges(build_network(_spec(grid_city)).net_file)[0]
    bad = tmp_path / "counts.csv"
    bad.write_text(f"edge_id,count\n{real},100\nnope_1,10\nMain Street,20\n")
    with pytest.raises(UserError) as exc:
        build_scenario(_spec(grid_city, counts=bad))
    msg = str(exc.value)
    assert "2 of the 3 edges counted in counts.csv are not in the network of grid" in msg
    assert "nope_1" in msg and "Main Street" in msg and real not in msg
    assert msg.count(". ") == 0 and msg.endswith(".")

    many = tmp_path / "many.csv"
    many.write_text("edge_id,count\n" + "".join(f"x{i},5\n" for i in range(8)))
    with pytest.raises(UserError, match=r"8 of the 8 edges .*\(x0, x1, x2, x3, x4, \.\.\.\)"):
        build_scenario(_spec(grid_city, counts=many))
    for text, fragment in [("edge,vehicles\na,1\n", "needs a header with columns edge_id,count"),
                           (f"edge_id,count\n{real},lots\n", "is not a number"),
                           (f"edge_id,count,begin,end\n{real},5,0,300\n{real},5,200,600\n", "overlapping intervals"),
                           (f"edge_id,count,begin,end\n{real},5,7200,10800\n", "but the episode runs 0-600 s")]:
        bad.write_text(text)
        with pytest.raises(UserError, match=fragment):
            build_scenario(_spec(grid_city, counts=bad))


def test_build_command_demand_flags(isolated_build, grid_city, tmp_path):
    """`--demand` (alias `--veh-per-hour`) overrides; demand sources exclude each other; unknown
    counted edges are one sentence on the command line too."""
    import os
    import subprocess

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "leed_traffic.cli", "build", "--city", str(grid_city), *args],
                              capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "COLUMNS": "200"})

    bad = tmp_path / "counts.csv"
    bad.write_text("edge_id,count\nnope,10\n")
    p = cli("--counts", str(bad), "--no-check")
    assert p.returncode == 2 and "1 of the 1 edges counted in counts.csv are not in the network" in p.stderr, p.stderr
    p = cli("--demand", "500", "--counts", str(bad))
    assert p.returncode == 2 and "--demand and --counts exclude each other" in p.stderr, p.stderr
    p = cli("--veh-per-hour", "600", "--no-check")
    assert p.returncode == 0, p.stderr
    assert "demand: 600 veh/h peak (--demand)" in p.stdout and "agents: 9" in p.stdout
