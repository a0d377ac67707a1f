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
from leed_traffic.fileio import atomic_write, atomic_write_text
from leed_traffic.netfile import tls_programs
from leed_traffic.rules import METRICS, choose_phase, env_scores
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
    """SUMO runs the network's own programs (netconvert's, RESCO's: one per light, the one
    ``netfile.first_program`` reads).

    The demonstrations' per-agent fixed-time reference (``demos.FixedTimeReference``) cycles the
    green durations of the same program through the env, since it needs each agent's trajectory.
    """

    name: str = "fixed"
    decides: bool = False

    def prepare(self, scenario: "Scenario", workdir: Path, seed: int) -> dict:
        return {"control": False}

    def act(self, env, obs):  # pragma: no cover - never called
        return {}


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
            for tls_id, prog in tls_programs(scenario.net_file):
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
            atomic_write_text(out, "\n".join(lines) + "\n")
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
                    atomic_write(routed, lambda tmp: self._run(
                        [sumo_binary("duarouter"), "-n", str(scenario.net_file), "--route-files", str(route),
                         "-o", str(tmp), "--ignore-errors", "--no-warnings",
                         "--begin", str(scenario.begin), "--end", str(scenario.end)], tmp))
            atomic_write(out, lambda tmp: self._run(
                [sys.executable, str(sumo_tool("tlsCycleAdaptation.py")), "-n", str(scenario.net_file),
                 "-r", str(routed), "-o", str(tmp), "-b", str(scenario.begin),
                 "-y", str(network_yellow(scenario.net_file))], tmp))
        return {"control": False, "additional_files": (str(out),)}

    @staticmethod
    def _run(cmd: list[str], out: Path) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        # ``out`` is atomic_write's temporary file, created empty: an empty one was never written
        if proc.returncode != 0 or not out.exists() or out.stat().st_size == 0:
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
        int(round(ph.duration)) for _, prog in tls_programs(net_file) for ph in prog.getPhases()
        if "y" in ph.state and ph.duration < 10
    )
    return counts.most_common(1)[0][0] if counts else 3


def _has_trips(route: Path) -> bool:
    with open(route, "rb") as f:
        head = f.read(1 << 16)
    return b"<trip " in head


@dataclass
class _RuleController:
    """A rule of ``leed_traffic.rules`` deciding every agent through the env.

    It chooses among all green phases (``choose_phase(..., legal=None)``) and leaves legality to
    the env, as these controllers always have; the reference experts (``llm.experts``) apply the
    same rule to the legal phases only.
    """

    name: str = ""
    decides: bool = True
    rule: str = ""
    """Key of ``rules.METRICS``."""

    def prepare(self, scenario, workdir, seed):
        return {}

    def act(self, env: "LeedTrafficEnv", obs) -> dict[str, int]:
        metric = METRICS[self.rule]
        return {a: choose_phase(env_scores(env, ts, metric), ts.green_phase)[0] for a, ts in env.signals.items()}


@dataclass
class MaxPressure(_RuleController):
    """Varaiya's max-pressure: the green phase whose links have the largest
    sum of (vehicles on incoming lane - vehicles on outgoing lane); ties keep the current phase."""

    name: str = "max-pressure"
    rule: str = "max-pressure"


@dataclass
class Greedy(_RuleController):
    """Longest queue first: the green phase serving the most halted vehicles; ties keep the current phase."""

    name: str = "greedy"
    rule: str = "longest-queue"


CLASSICAL = {"fixed": FixedTime, "webster": Webster, "actuated": Actuated, "max-pressure": MaxPressure,
             "greedy": Greedy}


def get_controller(name: str, **kwargs) -> Controller:
    key = name.lower()
    if key == "longest-queue":
        key = "greedy"
    if key in CLASSICAL:
        return CLASSICAL[key]()
    if key == "policy":
        from leed_traffic.learn.serving import PolicyController

        sample = kwargs.get("sample")  # None: the run's deployed mode
        return PolicyController.from_run(kwargs.get("run"), sample=None if sample is None else bool(sample))
    if key in ("pretrained", "pretrained-argmax"):
        from leed_traffic.learn.serving import PretrainedController

        return PretrainedController(kwargs.get("pretrained") or "pretrained",
                                    sample=kwargs.get("sample") is not False and key == "pretrained")
    raise UserError(f"Unknown controller {name!r}; choose from {', '.join([*CLASSICAL, 'policy', 'pretrained'])}.")
