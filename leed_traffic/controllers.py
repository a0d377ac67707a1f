"""Classical controllers, the yardsticks every learned policy is compared against.

Two kinds, run through the same evaluation loop (``evaluate.run_episode``):

- *program* controllers change the lights' SUMO programs and let SUMO run them: ``fixed``
  (netconvert's program), ``actuated`` (the same phases as SUMO gap-actuated control) and
  ``webster`` (cycle and splits optimised for the scenario's demand by SUMO's
  ``tlsCycleAdaptation.py``);
- *decision* controllers choose each agent's next green phase at every decision point, exactly
  like a learned policy: ``max-pressure`` and ``greedy`` (longest queue).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from leed_traffic.errors import UserError
from leed_traffic.sumo_env import sumo_binary, sumo_tool

if TYPE_CHECKING:
    from leed_traffic.env import LeedTrafficEnv
    from leed_traffic.scenario import Scenario

log = logging.getLogger(__name__)


class Controller(Protocol):
    name: str
    decides: bool
    """True: ``act`` is called at every decision; False: SUMO runs the program it ``prepare``d."""

    def prepare(self, scenario: "Scenario", workdir: Path, seed: int) -> dict:
        """Return extra env options (``additional_files``, ``control``, ...) for this episode."""
        ...

    def act(self, env: "LeedTrafficEnv", obs: dict[str, np.ndarray]) -> dict[str, int]: ...


@dataclass
class FixedTime:
    name: str = "fixed"
    decides: bool = False

    def prepare(self, scenario: "Scenario", workdir: Path, seed: int) -> dict:
        return {"control": False}

    def act(self, env, obs):  # pragma: no cover - never called
        return {}


def _programs(net_file: Path):
    import sumolib

    net = sumolib.net.readNet(str(net_file), withPrograms=True)
    for tls in net.getTrafficLights():
        programs = tls.getPrograms()
        if programs:
            yield tls.getID(), programs[sorted(programs)[0]]


@dataclass
class Actuated:
    """SUMO's gap-based actuated control on the lights' own phases.

    Green phases without minDur/maxDur would stay fixed in SUMO, so they get netconvert's
    actuated defaults (min 5 s, max 50 s); yellow and red phases keep their durations.
    """

    name: str = "actuated"
    decides: bool = False
    min_dur: int = 5
    max_dur: int = 50

    def prepare(self, scenario: "Scenario", workdir: Path, seed: int) -> dict:
        from xml.sax.saxutils import quoteattr

        out = workdir / "actuated.add.xml"
        if not out.exists():
            lines = ["<additional>"]
            for tls_id, prog in _programs(scenario.net_file):
                lines.append(f'  <tlLogic id={quoteattr(tls_id)} programID="actuated" type="actuated" offset="0">')
                for ph in prog.getPhases():
                    green = any(c in "Gg" for c in ph.state) and "y" not in ph.state
                    mn = ph.minDur if ph.minDur and ph.minDur > 0 and ph.minDur != ph.duration else None
                    mx = ph.maxDur if ph.maxDur and ph.maxDur > 0 and ph.maxDur != ph.duration else None
                    extra = ""
                    if green:
                        extra = f' minDur="{mn or self.min_dur}" maxDur="{mx or max(self.max_dur, ph.duration)}"'
                    lines.append(f'    <phase duration="{ph.duration:g}" state="{ph.state}"{extra}/>')
                lines.append("  </tlLogic>")
            lines.append("</additional>")
            tmp = out.with_suffix(".tmp")
            tmp.write_text("\n".join(lines) + "\n")
            tmp.replace(out)
        return {"control": False, "additional_files": (str(out),)}

    def act(self, env, obs):  # pragma: no cover
        return {}


@dataclass
class Webster:
    """Fixed time with cycle length and green splits from Webster's formula for the scenario's flows.

    SUMO's ``tlsCycleAdaptation.py`` reads the routes; ``<trip>`` files (RESCO) carry no routes,
    so they are routed with duarouter first. Cached per route file.
    """

    name: str = "webster"
    decides: bool = False

    def prepare(self, scenario: "Scenario", workdir: Path, seed: int) -> dict:
        route = scenario.route_file(seed)
        out = workdir / f"webster_{route.stem}.add.xml"
        if not out.exists():
            routed = route
            if _has_trips(route):
                routed = workdir / f"{route.stem}.routed.rou.xml"
                if not routed.exists():
                    self._run([sumo_binary("duarouter"), "-n", str(scenario.net_file), "--route-files", str(route),
                               "-o", str(routed), "--ignore-errors", "--no-warnings",
                               "--begin", str(scenario.begin), "--end", str(scenario.end)], routed)
            tmp = out.with_suffix(".tmp.xml")
            self._run([sys.executable, str(sumo_tool("tlsCycleAdaptation.py")), "-n", str(scenario.net_file),
                       "-r", str(routed), "-o", str(tmp), "-b", str(scenario.begin),
                       "-y", str(network_yellow(scenario.net_file))], tmp)
            tmp.replace(out)
        return {"control": False, "additional_files": (str(out),)}

    @staticmethod
    def _run(cmd: list[str], out: Path) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"{Path(cmd[1]).name if cmd[0] == sys.executable else Path(cmd[0]).name} failed: {tail[0]}")

    def act(self, env, obs):  # pragma: no cover
        return {}


def network_yellow(net_file: Path) -> int:
    """The yellow duration the network's own programs use most (netconvert: 3 s at 50 km/h).

    Webster keeps it, so its plan differs from the fixed one only in cycle and splits.
    (tlsCycleAdaptation's default of 4 s is why ANCHORS.md's Webster numbers are higher.)
    """
    from collections import Counter

    counts = Counter(
        int(round(ph.duration)) for _, prog in _programs(net_file) for ph in prog.getPhases()
        if "y" in ph.state and ph.duration < 10
    )
    return counts.most_common(1)[0][0] if counts else 3


def _has_trips(route: Path) -> bool:
    with open(route, "rb") as f:
        head = f.read(1 << 16)
    return b"<trip " in head


@dataclass
class MaxPressure:
    """Varaiya's max-pressure: the green phase whose links have the largest
    sum of (vehicles on incoming lane - vehicles on outgoing lane); ties keep the current phase."""

    name: str = "max-pressure"
    decides: bool = True

    def prepare(self, scenario, workdir, seed):
        return {}

    def act(self, env: "LeedTrafficEnv", obs) -> dict[str, int]:
        return {a: _argmax_keep(env.phase_pressures(ts), ts.green_phase) for a, ts in env.signals.items()}


@dataclass
class Greedy:
    """Longest queue first: the green phase serving the most halted vehicles."""

    name: str = "greedy"
    decides: bool = True

    def prepare(self, scenario, workdir, seed):
        return {}

    def act(self, env: "LeedTrafficEnv", obs) -> dict[str, int]:
        return {a: _argmax_keep(env.phase_queues(ts), ts.green_phase) for a, ts in env.signals.items()}


def _argmax_keep(values: np.ndarray, current: int) -> int:
    best = float(np.max(values))
    return current if values[current] >= best else int(np.argmax(values))


CLASSICAL = {"fixed": FixedTime, "webster": Webster, "actuated": Actuated, "max-pressure": MaxPressure,
             "greedy": Greedy}


def get_controller(name: str, **kwargs) -> Controller:
    key = name.lower()
    if key == "longest-queue":
        key = "greedy"
    if key in CLASSICAL:
        return CLASSICAL[key]()
    if key == "policy":
        from leed_traffic.policy_controller import PolicyController

        return PolicyController.from_run(kwargs.get("run"), sample=bool(kwargs.get("sample", True)))
    raise UserError(f"Unknown controller {name!r}; choose from {', '.join([*CLASSICAL, 'policy'])}.")
