"""Environments for the learner: the picklable recipe, the spec, and lockstep env-stepping workers.

libsumo runs a single simulation per process, so parallel rollouts need processes. Every worker
is built from a *picklable factory* (``EnvFactory``: city or scenario + env options). Whole-episode
rollouts (the default) run on ``workers.py``'s episode workers (in-process, local processes or
Ray), which own their episodes. This module keeps the *lockstep* path for ``rollout_steps`` > 0,
where the learner steps every env itself: a ``WorkerPool`` of ``Worker`` objects
(``reset/step/close`` plus ``spec``), one pipe round trip per decision step.

- ``InProcessWorker``: the env lives in this process (n_workers = 1; also what tests use).
- ``ProcessWorker``: the env lives in a child process started with ``spawn``/``forkserver``
  (never ``fork``: libsumo and torch's thread pools do not survive it) and is driven over a pipe;
  ``step_async`` + ``wait`` let the pool step all workers concurrently.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

Obs = dict[str, np.ndarray]
StepResult = tuple[Obs, dict[str, float], dict[str, bool], dict[str, bool], dict[str, Any]]


@dataclass(frozen=True)
class EnvFactory:
    """Picklable recipe for an environment: ``leed_traffic.env.make_env(city, **options)``.

    ``city``: a city name (its scenario is built or taken from the cache in every worker) or a
    built ``Scenario``.
    """

    city: Any
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> Any:
        from leed_traffic.env import make_env

        return make_env(self.city, **self.options)

    @property
    def name(self) -> str:
        """The city's name."""
        return self.city if isinstance(self.city, str) else str(getattr(self.city, "city", ""))


@dataclass
class EnvSpec:
    """What the learner needs from an environment, and what enters the checkpoint fingerprint."""

    agents: list[str]
    obs_dims: dict[str, int]
    n_actions: dict[str, int]
    city: str = ""
    scenario_hash: str = ""
    net_hash: str = ""
    neighbours: dict[str, list[str]] = field(default_factory=dict)
    delta_time: float = 0.0
    env_config: dict[str, Any] = field(default_factory=dict)
    """The env's own options (reward, observation, delta_time, seconds, ...): they change what
    is learnt, so they enter the checkpoint fingerprint (bookkeeping ones are dropped)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "agents": list(self.agents),
            "obs_dims": dict(self.obs_dims),
            "n_actions": dict(self.n_actions),
            "city": self.city,
            "scenario_hash": self.scenario_hash,
            "net_hash": self.net_hash,
            "neighbours": {a: list(v) for a, v in self.neighbours.items()},
            "delta_time": self.delta_time,
            "env_config": dict(self.env_config),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EnvSpec":
        return cls(**d)


def env_spec(env: Any) -> EnvSpec:
    """Read agents, sizes and scenario identity from a PettingZoo ParallelEnv."""
    agents = list(env.possible_agents)
    obs_dims = {a: int(np.prod(env.observation_space(a).shape)) for a in agents}
    n_actions = {a: int(env.action_space(a).n) for a in agents}
    scen = getattr(env, "scenario", None)
    unwrapped = getattr(env, "unwrapped", env)
    neighbours = getattr(env, "neighbours", None) or getattr(unwrapped, "neighbours", None)
    if neighbours is None and scen is not None:
        neighbours = getattr(scen, "neighbours", None)
    cfg = getattr(env, "config", None) or getattr(unwrapped, "config", None)
    delta = getattr(env, "delta_time", None) or getattr(cfg, "delta_time", None) or 0.0
    env_config: dict[str, Any] = {}
    if hasattr(env, "describe"):
        try:
            env_config = dict(env.describe().get("config", {}))
        except Exception:  # noqa: BLE001 - optional metadata
            env_config = {}
    for k in _ENV_BOOKKEEPING:
        env_config.pop(k, None)
    env_config = json.loads(json.dumps(env_config, default=str))
    return EnvSpec(
        agents=agents,
        obs_dims=obs_dims,
        n_actions=n_actions,
        city=str(getattr(scen, "city", "") or ""),
        scenario_hash=str(getattr(scen, "hash", "") or ""),
        net_hash=str(getattr(scen, "net_hash", "") or ""),
        neighbours={a: list(v) for a, v in (neighbours or {}).items()},
        delta_time=float(delta),
        env_config=env_config,
    )


# env options that do not change the learning problem (the trainer sets the seed per episode)
_ENV_BOOKKEEPING = ("seed", "use_gui", "tripinfo")


class Worker(Protocol):
    """The interface a rollout worker offers (local, subprocess or remote)."""

    def spec(self) -> EnvSpec: ...

    def reset(self, seed: int | None) -> tuple[Obs, dict[str, Any]]: ...

    def step(self, actions: dict[str, int]) -> StepResult: ...

    def close(self) -> None: ...


class InProcessWorker:
    """The environment in this process."""

    def __init__(self, factory: Callable[[], Any]):
        self.env = factory()

    def spec(self) -> EnvSpec:
        return env_spec(self.env)

    def reset(self, seed: int | None) -> tuple[Obs, dict[str, Any]]:
        return self.env.reset(seed=seed)

    def step(self, actions: dict[str, int]) -> StepResult:
        return self.env.step(actions)

    def close(self) -> None:
        self.env.close()

    # the stepping API of ProcessWorker, trivially (so the pool treats both alike)
    def step_async(self, actions: dict[str, int]) -> None:
        self._pending = self.step(actions)

    def wait(self) -> Any:
        out, self._pending = self._pending, None
        return out


class WorkerError(RuntimeError):
    """An exception inside a worker process, with its traceback."""


def _worker_main(conn: Any, factory: Callable[[], Any]) -> None:
    """Child-process loop: build the env, then serve (command, argument) messages."""
    env = None
    try:
        env = factory()
        conn.send(("ok", None))
        while True:
            cmd, arg = conn.recv()
            if cmd == "step":
                conn.send(("ok", env.step(arg)))
            elif cmd == "reset":
                conn.send(("ok", env.reset(seed=arg)))
            elif cmd == "spec":
                conn.send(("ok", env_spec(env)))
            elif cmd == "close":
                conn.send(("ok", None))
                break
    except (EOFError, KeyboardInterrupt):
        pass
    except BaseException:  # noqa: BLE001 - report everything to the parent
        try:
            conn.send(("error", traceback.format_exc()))
        except (BrokenPipeError, OSError):
            pass
    finally:
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001
                pass
        conn.close()


class ProcessWorker:
    """The environment in a child process, driven over a pipe."""

    def __init__(self, factory: Callable[[], Any], start_method: str = "spawn"):
        ctx = mp.get_context(start_method)
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, factory), daemon=True)
        self.proc.start()
        child.close()
        self._recv()  # env built (or its error raised here)

    def _recv(self) -> Any:
        try:
            status, payload = self.conn.recv()
        except EOFError as e:
            raise WorkerError(f"worker process {self.proc.pid} died") from e
        if status == "error":
            raise WorkerError(f"worker process {self.proc.pid} failed:\n{payload}")
        return payload

    def spec(self) -> EnvSpec:
        self.conn.send(("spec", None))
        return self._recv()

    def step_async(self, actions: dict[str, int]) -> None:
        self.conn.send(("step", actions))

    def wait(self) -> Any:
        return self._recv()

    def reset(self, seed: int | None) -> tuple[Obs, dict[str, Any]]:
        self.conn.send(("reset", seed))
        return self.wait()

    def step(self, actions: dict[str, int]) -> StepResult:
        self.step_async(actions)
        return self.wait()

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(("close", None))
                self.conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)
        self.conn.close()


class WorkerPool:
    """A fixed set of workers stepped in lockstep (sends first, then waits: they run in parallel)."""

    def __init__(self, workers: list[Any]):
        if not workers:
            raise ValueError("a pool needs at least one worker")
        self.workers = workers

    @classmethod
    def make(
        cls, factory: Callable[[], Any], n_workers: int, start_method: str = "spawn"
    ) -> "WorkerPool":
        """n_workers = 1 -> in-process; otherwise one child process (one SUMO) per worker."""
        if n_workers == 1:
            return cls([InProcessWorker(factory)])
        workers: list[Any] = []
        try:
            for _ in range(n_workers):
                workers.append(ProcessWorker(factory, start_method))
        except BaseException:
            for w in workers:
                w.close()
            raise
        return cls(workers)

    def __len__(self) -> int:
        return len(self.workers)

    def spec(self) -> EnvSpec:
        return self.workers[0].spec()

    def reset(self, index: int, seed: int | None) -> tuple[Obs, dict[str, Any]]:
        return self.workers[index].reset(seed)

    def step(self, actions: list[dict[str, int]]) -> list[StepResult]:
        for w, a in zip(self.workers, actions):
            w.step_async(a)
        return [w.wait() for w in self.workers]

    def close(self) -> None:
        for w in self.workers:
            try:
                w.close()
            except Exception:  # noqa: BLE001 - close the others regardless
                pass
