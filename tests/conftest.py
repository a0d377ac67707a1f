"""Shared fixtures. Small real inputs: the Melbourne extract (41 lights, ~1 s to convert) and
short episodes, so the default suite stays fast while exercising real SUMO."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from leed_traffic import sumo_env  # noqa: F401 - SUMO_HOME for sumo-rl / sumolib

REPO = Path(__file__).resolve().parent.parent
OSM = REPO / "networks" / "osm"


@pytest.fixture(scope="session")
def melbourne():
    """The bundled Melbourne scenario (built once, cached like a user's build)."""
    from leed_traffic.scenario import build_scenario

    return build_scenario("melbourne")


@pytest.fixture()
def isolated_build(tmp_path, monkeypatch) -> Path:
    """A cold, private cache directory (networks, scenarios, LLM answers) for one test; child
    processes (the CLI) inherit it through the environment. Returns the cache directory."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LEED_TRAFFIC_CACHE", str(cache))
    return cache


TINY_OSM_NO_SIGNALS = """<?xml version='1.0' encoding='UTF-8'?>
<osm version="0.6" generator="hand">
  <node id="1" lat="52.5000" lon="13.4000" version="1"/>
  <node id="2" lat="52.5000" lon="13.4050" version="1"/>
  <node id="3" lat="52.5000" lon="13.4100" version="1"/>
  <node id="4" lat="52.5040" lon="13.4050" version="1"/>
  <node id="5" lat="52.4960" lon="13.4050" version="1"/>
  <way id="10" version="1"><nd ref="1"/><nd ref="2"/><nd ref="3"/>
    <tag k="highway" v="primary"/><tag k="name" v="Hauptstrasse"/></way>
  <way id="11" version="1"><nd ref="4"/><nd ref="2"/><nd ref="5"/>
    <tag k="highway" v="secondary"/><tag k="name" v="Querstrasse"/></way>
</osm>
"""


@pytest.fixture()
def osm_without_signals(tmp_path) -> Path:
    p = tmp_path / "crossing.osm"
    p.write_text(TINY_OSM_NO_SIGNALS)
    return p


def copy_extract(name: str, dst: Path) -> Path:
    out = dst / name
    shutil.copy(OSM / name, out)
    return out
