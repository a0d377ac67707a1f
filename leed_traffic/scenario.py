"""A scenario: network + demand + episode window + agents, described by ``scenario.json``.

``build_scenario`` is the single entry from a ``--city`` argument to files SUMO can run. Like the
network, a scenario is cached under ``scenarios/build/<city>-<hash>/`` (hash of the network and
the demand definition) and built in a temporary directory renamed when complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leed_traffic.cities import SCENARIOS_DIR, CitySpec, resco_dir, resolve_city
from leed_traffic.demand import count_vehicles, generate_routes
from leed_traffic.errors import ScenarioError
from leed_traffic.network import _atomic_dir, _commit_dir, build_network, controllable_lights

log = logging.getLogger(__name__)

BUILD_DIR = SCENARIOS_DIR / "build"
SCENARIO_VERSION = "1"


@dataclass(frozen=True)
class Scenario:
    city: str
    kind: str
    dir: Path
    net_file: Path
    route_files: tuple[Path, ...]
    agents: tuple[str, ...]
    begin: int
    end: int
    hash: str
    time_to_teleport: int = 300
    eval_seeds: tuple[int, ...] = (100, 101, 102)
    n_traffic_lights: int = 0
    vehicles_per_route_file: tuple[int, ...] = ()
    delta_time: int = 5
    yellow_time: int = 3
    sumo_args: tuple[str, ...] = ()

    @property
    def n_agents(self) -> int:
        return len(self.agents)

    def route_file(self, seed: int) -> Path:
        """Demand for an episode seed: route file ``seed mod n`` (held-out seeds reuse files with a
        different SUMO seed; RESCO maps have a single route file)."""
        return self.route_files[seed % len(self.route_files)]

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dir"] = str(self.dir)
        d["net_file"] = str(self.net_file)
        d["route_files"] = [str(p) for p in self.route_files]
        d["n_agents"] = self.n_agents
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "Scenario":
        d = json.loads((Path(directory) / "scenario.json").read_text())
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in fields}
        kw["dir"] = Path(kw["dir"])
        kw["net_file"] = Path(kw["net_file"])
        kw["route_files"] = tuple(Path(p) for p in kw["route_files"])
        for k in ("agents", "eval_seeds", "vehicles_per_route_file", "sumo_args"):
            kw[k] = tuple(kw.get(k, ()))
        return cls(**kw)


def _scenario_hash(spec: CitySpec, net_hash: str) -> str:
    payload = {
        "v": SCENARIO_VERSION,
        "net": net_hash,
        "demand": dataclasses.asdict(spec.demand),
        "begin": spec.begin,
        "end": spec.end,
        "ttt": spec.time_to_teleport,
        "control": [spec.delta_time, spec.yellow_time],
        "sumo_args": list(spec.sumo_args),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build_scenario(city: str | CitySpec, force: bool = False, **overrides: Any) -> Scenario:
    """Build (or reuse) the scenario for a ``--city`` argument."""
    spec = city if isinstance(city, CitySpec) else resolve_city(city, **overrides)
    net = build_network(spec, force=force)
    digest = _scenario_hash(spec, net.hash)
    final = BUILD_DIR / f"{spec.name}-{digest}"
    if force and final.exists():
        shutil.rmtree(final)
    if (final / "scenario.json").exists():
        return Scenario.load(final)

    agents = controllable_lights(net.net_file)
    if not agents:
        raise ScenarioError(
            f"{spec.name} has {net.n_traffic_lights} traffic light(s) but none with two distinct green "
            "phases to choose between; choose an extract with signalized crossings."
        )
    tmp = _atomic_dir(final)
    try:
        if spec.kind == "resco":
            folder = resco_dir() / spec.name
            routes = tuple(sorted(folder.glob("*.rou.xml")))
        else:
            routes = tuple(
                generate_routes(net.net_file, tmp / f"routes_s{s}.rou.xml", spec.demand, s, spec.begin, spec.end)
                for s in spec.demand.seeds
            )
        counts = tuple(count_vehicles(r) for r in routes)
        if spec.kind != "resco" and min(counts) == 0:
            raise ScenarioError(
                f"No vehicle could be routed on {spec.name}; the road network is too fragmented: "
                "try a larger bbox or another extract."
            )
        final_routes = tuple(final / r.name if r.parent == tmp else r for r in routes)
        scenario = Scenario(
            city=spec.name, kind=spec.kind, dir=final, net_file=net.net_file, route_files=final_routes,
            agents=tuple(agents), begin=spec.begin, end=spec.end, hash=digest,
            time_to_teleport=spec.time_to_teleport, eval_seeds=spec.eval_seeds,
            n_traffic_lights=net.n_traffic_lights, vehicles_per_route_file=counts,
            delta_time=spec.delta_time, yellow_time=spec.yellow_time, sumo_args=spec.sumo_args,
        )
        meta = scenario.to_json() | {"demand": dataclasses.asdict(spec.demand),
                                     "attribution": "Map data © OpenStreetMap contributors (ODbL)"
                                     if spec.kind == "osm" else "RESCO benchmark (from the sumo-rl package)"}
        (tmp / "scenario.json").write_text(json.dumps(meta, indent=2))
        _commit_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Scenario.load(final)


def scenario_from_files(
    net_file: str | Path, route_files: list[str | Path], *, begin: int = 0, end: int = 3600,
    name: str | None = None, time_to_teleport: int = -1,
) -> Scenario:
    """Wrap an existing SUMO network and route files (no build, no cache) as a Scenario."""
    net_file = Path(net_file).resolve()
    if not net_file.exists():
        raise ScenarioError(f"Network file {net_file} does not exist; check the path.")
    routes = tuple(Path(r).resolve() for r in route_files)
    digest = hashlib.sha256(
        b"".join(p.read_bytes() for p in (net_file, *routes)) + f"{begin}-{end}".encode()
    ).hexdigest()[:16]
    return Scenario(
        city=name or net_file.name.split(".")[0], kind="file", dir=net_file.parent, net_file=net_file,
        route_files=routes, agents=tuple(controllable_lights(net_file)), begin=begin, end=end,
        hash=digest, time_to_teleport=time_to_teleport,
    )
