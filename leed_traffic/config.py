"""One experiment, one config: ``ExperimentConfig`` = scenario, env, demos, train and eval sections.

Every default is defined once, in the dataclass field that owns it (the learner's hyperparameters
in ``learn.config.TrainConfig``, the environment's in ``env.EnvConfig``). An experiment is built
from those defaults, then a TOML file (``--config FILE``), then ``--set SECTION.FIELD=VALUE``
overrides and the CLI's shortcut flags, in that order. The pipeline resolves what the defaults
leave open (evaluation seeds, the step budget) before anything runs and writes the result to the
run's ``config.json``, so that file says exactly what ran; ``--config RUN/config.json`` repeats it.

TOML example::

    [scenario]
    city = "cologne8"
    [env]
    reward = "queue"
    [demos]
    llm = "max-pressure"
    rounds = 1
    [train]
    algo = "leed"
    episodes = 100
    ent_coef = 0.02
    [eval]
    episodes = 5
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leed_traffic.env import EnvConfig
from leed_traffic.errors import UserError
from leed_traffic.evaluate import ALL_CLASSICAL
from leed_traffic.learn.config import TrainConfig



@dataclass
class ScenarioSection:
    """Which city, and its demand."""

    city: str = "helsinki"
    """Bundled city, RESCO map, OSM file path or ``place:<name>`` (see ``cities.resolve_city``)."""
    veh_per_hour: float | None = None
    """Peak demand for OSM cities (None: a bundled city's calibrated value; any other extract's
    demand is fitted to its network, ``calibrate.fit_demand``)."""
    fit_demand: bool = False
    """Fit the demand to the network even for a bundled city (``leed-traffic build --fit-demand``)."""
    counts: str | None = None
    """Measured edge counts (CSV edge_id,count[,begin,end] or SUMO edgeData XML): routes are sampled
    from them with SUMO's routeSampler instead of random trips."""
    lefthand: bool | None = None
    """Left-hand traffic (netconvert ``--lefthand``); None: the city's definition (bundled london:
    left-hand; an OSM file or place: right-hand unless set)."""


@dataclass
class EnvSection:
    """Environment options that change what is learnt. Defaults are ``EnvConfig``'s (sumo-rl's),
    except two: experiments enforce max green (a real controller's rule; without it an agent can
    hold a phase forever, which gridlocks OSM cities: docs/leed.md), and observe ``phase`` (the
    input of the experiments' shared phase policy, ``ExperimentConfig.train``)."""

    reward: str = EnvConfig.reward
    """``rewards.REWARDS`` name: diff-waiting-time (sumo-rl's), queue, pressure, queue-backlog
    (queue plus vehicles waiting to enter on the approaches and spillback from the exits)."""
    observation: str = "phase"
    """``observations.OBSERVATIONS`` name: phase (default here: per green phase, what its movements
    see; what the phase policy reads), default (sumo-rl's), pressure, backlog or pressure-backlog
    (the default/pressure layout plus insertion backlog per approach and outgoing-lane occupancy)."""
    enforce_max_green: bool = True
    """Force a phase change after ``max_green`` seconds of green."""
    min_green: int = EnvConfig.min_green
    max_green: int = EnvConfig.max_green
    delta_time: int | None = EnvConfig.delta_time
    """Seconds between decisions (None: the scenario's, 5 on OSM cities, 10 on RESCO maps)."""
    yellow_time: int | None = EnvConfig.yellow_time
    """Yellow seconds (None: the scenario's, 3)."""
    seconds: int | None = EnvConfig.seconds
    """Episode length (None: the scenario's, one hour)."""

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``env.make_env``; None means "the scenario's"."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class DemosSection:
    """Expert demonstrations (LEED, BC, RELED)."""

    llm: str = "auto"
    """Demonstrator: auto (claude with ANTHROPIC_API_KEY, else the embedded local model), claude,
    openai, local, or a reference expert (max-pressure, longest-queue)."""
    rounds: int = 2
    """Generation + refinement rounds."""
    keep: int = 2
    """Best trajectories kept per intersection."""
    require_beat_fixed: bool = True
    """Keep only trajectories at least as good as fixed time (see ``demos.DemoConfig``)."""
    model: str | None = None
    """Model override for claude/openai (name) or local (GGUF path)."""
    path: str | None = None
    """An existing demonstration dataset to use instead of generating one."""
    episodes: int = 1
    """Episodes per round on consecutive demand seeds (``demos.DemoConfig.episodes``), played in
    parallel by the run's workers (``train.backend``, ``train.n_workers``, ``train.ray_address``)."""


@dataclass
class EvalSection:
    """Held-out evaluation of the final policy against the classical controllers."""

    episodes: int = 3
    """Held-out episodes per controller (0: no evaluation)."""
    seeds: tuple[int, ...] = ()
    """Held-out seeds; empty = the scenario's (``evaluate.held_out_seeds``). config.json records
    the seeds that were actually used."""
    controllers: tuple[str, ...] = ALL_CLASSICAL
    """Classical controllers evaluated beside the policy."""
    max_green_rows: bool = True
    """When the env enforces max green, also evaluate the env-deciding classical controllers
    (max-pressure, greedy) under the same rule."""
    argmax: bool = True
    """Also evaluate the policy's most likely phase (``<algo>-argmax`` rows) beside the sampled
    policy PPO trained."""
    validation_episodes: int = 2
    """Episodes on training seeds (``learn.episodes.validation_seeds``) that choose the deployed
    mode, sampled or argmax, by honest mean delay (ties: sampled); 0 deploys the sampled policy.
    Export, gui, report and the benchmarks' headline use the chosen mode; the held-out rows of both
    stay in the evaluation. Why: a label-smoothed policy sampled as trained jammed cologne3's
    held-out episodes (140 s) where its argmax took 25 s, and on cologne1 the argmax jammed one
    seed (docs/learning.md); which one a policy needs is a property of that policy, measured
    where it trained."""
    report: bool = True
    """Write report.md / report.html after the evaluation."""


PHASE_LEARNING_RATE = 1e-3
"""The experiments' Adam step size (``TrainConfig`` keeps CleanRL's 3e-4). One update per
episode gives a 25-episode run only 400 Adam steps: at 3e-4 the shared phase policy barely moves
(approximate KL 1e-5 to 1e-3 per update on cologne8); on cologne8's training seeds IPPO ended at 33.7-46.7 s with
3e-4 and 24.2-25.5 s with 1e-3 (docs/leed.md "Passing the teacher")."""
PHASE_LABEL_SMOOTHING = 0.2
"""The experiments' ``expert_label_smoothing``: clones keep exploring (docs/leed.md)."""


@dataclass
class ExperimentConfig:
    """Everything one ``leed-traffic train`` (or one benchmark run) does."""

    scenario: ScenarioSection = field(default_factory=ScenarioSection)
    env: EnvSection = field(default_factory=EnvSection)
    demos: DemosSection = field(default_factory=DemosSection)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        policy="phase", learning_rate=PHASE_LEARNING_RATE, expert_label_smoothing=PHASE_LABEL_SMOOTHING))
    """``TrainConfig``'s defaults, except the network and two settings measured with it:
    experiments train the shared phase policy (one actor-critic for every intersection; it learns
    faster and more stably than per-agent MLPs and transfers between cities: docs/leed.md "The
    phase policy"), with Adam at ``PHASE_LEARNING_RATE`` and a label-smoothed expert loss
    (``PHASE_LABEL_SMOOTHING``; docs/leed.md "Passing the teacher"). ``TrainConfig`` itself keeps
    ``mlp``, 3e-4 and no smoothing, what every run before them used (their config.json files
    repeat as they ran)."""
    eval: EvalSection = field(default_factory=EvalSection)

    SECTIONS = ("scenario", "env", "demos", "train", "eval")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {s: _plain(dataclasses.asdict(getattr(self, s))) for s in self.SECTIONS}

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> "ExperimentConfig":
        """Sections from a dict (a TOML file or a run's config.json: its other keys are ignored)."""
        cfg = cls()
        if "experiment" in d and isinstance(d["experiment"], dict):  # a run's config.json
            d = d["experiment"]
            train = d.get("train")
            if isinstance(train, dict):  # settings a run recorded before they existed ran as TrainConfig's
                before = {k: getattr(TrainConfig, k) for k in ("policy", "expert_label_smoothing") if k not in train}
                d = {**d, "train": {**before, **train}}
        for name in cls.SECTIONS:
            values = d.get(name)
            if values is None:
                continue
            if not isinstance(values, dict):
                raise UserError(f"[{name}] in {source} must be a table of settings.")
            for key, value in values.items():
                cfg.set(f"{name}.{key}", value, source=source)
        unknown = sorted(set(d) - set(cls.SECTIONS) - _RECORD_KEYS)
        if unknown:
            raise UserError(f"Unknown section(s) {', '.join(unknown)} in {source}; "
                            f"sections are {', '.join(cls.SECTIONS)}.")
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "ExperimentConfig":
        """A TOML experiment file, or a run's config.json (to repeat that run)."""
        p = Path(path)
        if not p.is_file():
            raise UserError(f"Config file {p} does not exist; check the path.")
        text = p.read_text()
        try:
            if p.suffix == ".json":
                import json

                data = json.loads(text)
            else:
                data = tomllib.loads(text)
        except ValueError as exc:
            raise UserError(f"{p} is not valid {'JSON' if p.suffix == '.json' else 'TOML'} ({exc}); fix it.") from exc
        return cls.from_dict(data, source=str(p))

    # ------------------------------------------------------------------ overrides
    def set(self, dotted: str, value: Any, *, source: str = "--set") -> None:
        """Set ``section.field`` from a TOML/JSON value or a command-line string."""
        section_name, _, name = dotted.partition(".")
        if section_name not in self.SECTIONS or not name:
            raise UserError(f"{source}: {dotted!r} is not SECTION.FIELD with SECTION one of "
                            f"{', '.join(self.SECTIONS)}.")
        section = getattr(self, section_name)
        if name == "reled" and section_name == "train":  # runs of earlier versions
            if value in (True, "true", "1"):
                section.algo = "reled"
            return
        fields = {f.name: f for f in dataclasses.fields(section)}
        if name not in fields:
            raise UserError(f"{source}: [{section_name}] has no setting {name!r}; it has "
                            f"{', '.join(sorted(f for f in fields if not f.startswith('_')))}.")
        hint = typing.get_type_hints(type(section))[name]
        try:
            converted = _convert(value, hint)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{source}: {dotted} = {value!r} is not a valid {_type_name(hint)} ({exc}).") from None
        setattr(section, name, converted)

    def init_from(self, name: str, *, source: str = "--init") -> "ExperimentConfig":
        """Fine-tune a pretrained phase policy (``learn.pretrained``: 'pretrained' or a file):
        ``train.init_policy`` = it, ``train.policy`` = phase, its hidden sizes, and the env options
        it was trained under (observation, reward, decision interval, green times), which its
        weights only make sense with. Later ``--set`` overrides still apply."""
        from leed_traffic.learn.pretrained import load_file

        meta = load_file(name)["meta"]
        self.train.init_policy, self.train.policy = name, "phase"
        self.train.hidden_sizes = tuple(int(h) for h in meta["hidden_sizes"])
        env_fields = {f.name for f in dataclasses.fields(self.env)} - {"seconds"}
        for k, v in (meta.get("env") or {}).items():
            if k in env_fields and v is not None:
                self.set(f"env.{k}", v, source=source)
        return self

    def apply(self, overrides: list[str]) -> "ExperimentConfig":
        """``SECTION.FIELD=VALUE`` strings (``--set``), in order."""
        for item in overrides:
            key, eq, value = item.partition("=")
            if not eq:
                raise UserError(f"--set {item!r}: write SECTION.FIELD=VALUE, e.g. train.ent_coef=0.02.")
            self.set(key.strip(), value.strip())
        return self.validate()

    def validate(self) -> "ExperimentConfig":
        """Re-run the sections' own checks after overrides (TrainConfig refuses unknown algos...)."""
        try:
            self.train.__post_init__()
        except ValueError as exc:
            raise UserError(f"{exc}.") from None
        if self.eval.episodes < 0:
            raise UserError("eval.episodes must be 0 (no evaluation) or more.")
        if self.eval.validation_episodes < 0:
            raise UserError("eval.validation_episodes must be 0 (deploy the sampled policy) or more.")
        from leed_traffic.observations import get_observation
        from leed_traffic.rewards import get_reward

        get_reward(self.env.reward)  # unknown names -> UserError listing the choices
        get_observation(self.env.observation)
        if self.train.policy == "phase" and self.env.observation != "phase":
            raise UserError(f"train.policy=phase scores phases from the 'phase' observation, not "
                            f"{self.env.observation!r}; add --set env.observation=phase, or --set "
                            "train.policy=mlp for per-intersection networks that read any observation.")
        return self


# keys of a run's config.json besides the sections (what ran: the env spec, fingerprint, ...)
_RECORD_KEYS = {"experiment", "env_spec", "fingerprint", "record", "city", "config"}


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _convert(value: Any, hint: Any) -> Any:
    """A TOML value or a CLI string -> the field's type (bool, int, float, str, tuples, None)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if len(args) < len(typing.get_args(hint)):
                return None
        last: Exception | None = None
        for a in args:
            try:
                return _convert(value, a)
            except (TypeError, ValueError) as exc:
                last = exc
        raise last or ValueError("no matching type")
    if origin is tuple:
        items = value
        if isinstance(value, str):
            items = [v for v in value.replace(" ", "").split(",") if v] if value.strip() else []
        if not isinstance(items, (list, tuple)):
            raise TypeError("expected a list")
        (item_type, *_rest) = typing.get_args(hint) or (str,)
        return tuple(_convert(v, item_type) for v in items)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise TypeError("expected a table")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if hint is int:
        if isinstance(value, bool):
            raise TypeError("expected an integer")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("expected an integer")
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise TypeError("expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise TypeError("expected a string")
        return str(value)
    return value
