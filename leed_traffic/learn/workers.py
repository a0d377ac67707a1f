"""Rollout workers that own whole episodes, on three interchangeable backends.

Why: stepping SUMO from the learner costs a pipe round trip per decision step and ties every
worker to the learner's machine. Here a worker holds its environment (one libsumo simulation per
process), a copy of the policy (built with ``build_policy``, weights broadcast by the learner after
every update) and plays complete episodes; only finished ``Trajectory`` objects travel back.

The learner sees one interface, ``RolloutBackend.run(weights, tasks) -> trajectories`` (in task
order), whatever runs the episodes:

- ``inprocess``: one ``EpisodeRunner`` in this process, episodes one after another (default for
  one worker; any number of logical workers).
- ``process``: one local child process per worker (``spawn``/``forkserver``, never ``fork``:
  libsumo and torch's thread pools do not survive it), driven over pipes.
- ``ray``: one Ray actor per worker, on this machine or across a cluster (optional extra:
  ``pip install -e '.[ray]'``; Ray is imported only here, only when asked for).

Same seeds, same episodes on every backend: a task carries the episode's SUMO seed and the seed of
the torch RNG that samples its actions (``episodes.action_seed``, derived from the episode seed),
and the policy copy has the learner's weights, so a trajectory does not depend on where, or in
which order, it was played. That is also what makes failures cheap: a worker that dies mid-episode
is replaced and its episode is played again, with an identical result; a worker that keeps dying
(or hangs past ``timeout_s``) stops the run with one sentence instead of hanging it.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_ready
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from leed_traffic.errors import UserError
from leed_traffic.learn.episodes import step_outcome
from leed_traffic.learn.rollout import EnvSpec, WorkerError, env_spec

BACKENDS = ("auto", "inprocess", "process", "ray")
EPISODE_TIMEOUT_S = 1800.0
"""Longest an episode (or a worker's start) may take before its worker counts as hung."""
MAX_RESTARTS = 2
"""Replacements of a dead or hung worker per episode before the run stops."""
RAY_CONNECT_TIMEOUT_S = 60.0


class WorkerLost(UserError):
    """A rollout worker died or hung more often than ``MAX_RESTARTS`` allows (one sentence)."""


@dataclass(frozen=True)
class EpisodeTask:
    """One episode to play: logical worker slot and its episode counter, the SUMO seed, and the
    seed of the action-sampling RNG (both derived from the run's seed in ``episodes.py``)."""

    worker: int
    number: int
    seed: int
    sample_seed: int


@dataclass
class Trajectory:
    """A complete episode as the learner needs it ([T, A] arrays in ``spec.agents`` order)."""

    worker: int
    number: int
    seed: int
    obs: np.ndarray  # [T, A, P] float32, zero-padded to the policy's max_obs
    obs_dims: list[int]
    actions: np.ndarray  # [T, A] int64
    logprobs: np.ndarray  # [T, A] float32
    values: np.ndarray  # [T, A] float32
    raw_rewards: np.ndarray  # [T, A] float32, as the env gave them
    truncated: bool
    """The episode ended by the time limit (not a terminal state)."""
    bootstrap: np.ndarray | None
    """V(final observation) [A] on truncation (added as gamma * V to the last reward), else None."""
    delay: float | None
    """The network delay the env reported at the episode's end."""
    sim_time: float
    wall_s: float = 0.0
    cpu_s: float = 0.0
    """CPU time the playing process spent on it (wall_s / cpu_s > 1: it waited for a core)."""
    peak_rss_mb: float = 0.0
    """Peak resident memory of the process that played it (benchmarks)."""
    host: str = ""
    """hostname:pid of the process that played it."""
    node: str = ""
    """The Ray node it ran on ("" off Ray)."""

    @property
    def steps(self) -> int:
        return len(self.actions)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _ray_node() -> str:
    """This process's Ray node id, when it is a Ray worker (never imports Ray itself)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return ""
    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:
        return ""


# ---------------------------------------------------------------------- the worker itself
class EpisodeRunner:
    """An environment plus a policy copy; plays one episode per ``run``. Every backend wraps it."""

    def __init__(self, factory: Callable[[], Any], config: Any):
        from leed_traffic.learn.policy import build_policy

        torch.set_num_threads(int(getattr(config, "torch_threads", 1) or 1))
        self.env = factory()
        self.spec = env_spec(self.env)
        if getattr(config, "init_policy", ""):  # the learner broadcasts the real weights anyway
            config = dataclasses.replace(config, init_policy="")
        with torch.random.fork_rng(devices=[]):  # leave the learner's RNG alone (inprocess)
            self.policy = build_policy(self.spec, config)
        self.agents = list(self.spec.agents)
        self.obs_dims = [int(self.spec.obs_dims[a]) for a in self.agents]
        self.max_obs = int(self.policy.max_obs)

    def env_spec(self) -> EnvSpec:
        return self.spec

    def set_weights(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})

    def _padded(self, obs: dict[str, Any]) -> np.ndarray:
        """One env observation -> [A, 1, max_obs] float32 (what ``act_padded`` reads)."""
        out = np.zeros((len(self.agents), 1, self.max_obs), np.float32)
        for i, a in enumerate(self.agents):
            x = np.asarray(obs[a], np.float32).reshape(-1)
            out[i, 0, : x.shape[-1]] = x
        return out

    def run(self, task: EpisodeTask) -> Trajectory:
        """Play ``task``'s episode to its end with the current weights."""
        t0, c0, agents, dt = time.time(), time.process_time(), self.agents, self.spec.delta_time
        rows: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "logp", "val", "raw")}
        delay, bootstrap = None, None
        # the episode's own sampling stream: ``act_padded`` draws from torch's default generator
        # (it takes none), so that generator is forked, seeded from the episode and restored after
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(task.sample_seed)
            obs, _ = self.env.reset(seed=task.seed)
            x = self._padded(obs)
            while True:
                act, logp, val = self.policy.act_padded(torch.from_numpy(x))
                result = self.env.step(dict(zip(agents, act[:, 0].tolist())))
                raw, done, truncated, d, sim_time = step_outcome(agents, result, len(rows["act"]) + 1, dt)
                for k, v in zip(("obs", "act", "logp", "val", "raw"), (x[:, 0], act[:, 0], logp[:, 0],
                                                                        val[:, 0], raw)):
                    rows[k].append(v)
                delay = d if d is not None else delay
                if done:
                    break
                x = self._padded(result[0])
            final = result[0]
            if truncated and final and all(a in final for a in agents):
                _, _, v_fin = self.policy.act_padded(torch.from_numpy(self._padded(final)))
                bootstrap = v_fin[:, 0].astype(np.float32)
        return Trajectory(
            worker=task.worker, number=task.number, seed=task.seed,
            obs=np.stack(rows["obs"]).astype(np.float32), obs_dims=self.obs_dims,
            actions=np.stack(rows["act"]).astype(np.int64),
            logprobs=np.stack(rows["logp"]).astype(np.float32),
            values=np.stack(rows["val"]).astype(np.float32),
            raw_rewards=np.stack(rows["raw"]).astype(np.float32),
            truncated=bool(truncated), bootstrap=bootstrap, delay=delay, sim_time=float(sim_time),
            wall_s=time.time() - t0, cpu_s=time.process_time() - c0, peak_rss_mb=_peak_rss_mb(), host=f"{socket.gethostname()}:{os.getpid()}",
            node=_ray_node(),
        )

    def close(self) -> None:
        self.env.close()


def numpy_weights(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A state_dict as plain arrays: what is sent to other processes (no torch shared memory)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


# ---------------------------------------------------------------------- backends
class RolloutBackend:
    """The learner's view of its workers: ``run(weights, tasks)`` -> one trajectory per task."""

    name = ""

    def __init__(self) -> None:
        self.peak_rss_mb: dict[str, float] = {}
        """Per process that played episodes (host:pid): its peak resident memory, MiB."""
        self.nodes: set[str] = set()
        """The Ray nodes episodes ran on (benchmarks: did they spread?)."""
        self.episode_wall_s = self.episode_cpu_s = 0.0
        """Summed over the episodes played: wall and CPU time (their ratio: the share of a core
        a worker got; below 1 it waited for one)."""

    def spec(self) -> EnvSpec:
        raise NotImplementedError

    def run(self, weights: dict[str, torch.Tensor], tasks: list[EpisodeTask]) -> list[Trajectory]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _seen(self, traj: Trajectory) -> Trajectory:
        self.peak_rss_mb[traj.host] = max(self.peak_rss_mb.get(traj.host, 0.0), traj.peak_rss_mb)
        if traj.node:
            self.nodes.add(traj.node)
        self.episode_wall_s += traj.wall_s
        self.episode_cpu_s += traj.cpu_s
        return traj


class InProcessBackend(RolloutBackend):
    """One runner in this process; the tasks are played one after another."""

    name = "inprocess"

    def __init__(self, factory: Callable[[], Any], config: Any):
        super().__init__()
        self.runner = EpisodeRunner(factory, config)

    def __len__(self) -> int:
        return 1

    def spec(self) -> EnvSpec:
        return self.runner.spec

    def run(self, weights: dict[str, torch.Tensor], tasks: list[EpisodeTask]) -> list[Trajectory]:
        self.runner.set_weights(weights)
        return [self._seen(self.runner.run(t)) for t in tasks]

    def close(self) -> None:
        self.runner.close()


def _runner_main(conn: Any, factory: Callable[[], Any], config: Any) -> None:
    """Child-process loop: build the runner, then serve ("weights" | "run" | "close") messages."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle (it closes us)
    runner = None
    try:
        runner = EpisodeRunner(factory, config)
        conn.send(("ok", runner.spec))
        while True:
            cmd, arg = conn.recv()
            if cmd == "weights":
                runner.set_weights(arg)
            elif cmd == "run":
                conn.send(("ok", runner.run(arg)))
            elif cmd == "close":
                break
    except EOFError:
        pass
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except (BrokenPipeError, OSError):
            pass
    finally:
        if runner is not None:
            try:
                runner.close()
            except Exception:
                pass
        conn.close()


class _Child:
    """One worker process and its pipe."""

    def __init__(self, ctx: Any, factory: Callable[[], Any], config: Any):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_runner_main, args=(child, factory, config), daemon=True)
        self.proc.start()
        child.close()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class ProcessBackend(RolloutBackend):
    """One local child process per worker (one SUMO each), episodes dealt to idle workers."""

    name = "process"

    def __init__(self, factory: Callable[[], Any], config: Any, n_workers: int, start_method: str = "spawn",
                 timeout_s: float = EPISODE_TIMEOUT_S):
        import multiprocessing as mp

        super().__init__()
        if start_method == "fork":
            raise ValueError("never fork rollout workers: libsumo and torch's threads do not survive it")
        self.ctx = mp.get_context(start_method)
        self.factory, self.config, self.timeout_s = factory, config, timeout_s
        self.children: list[_Child] = []
        self._spec: EnvSpec | None = None
        try:
            self.children = [_Child(self.ctx, factory, config) for _ in range(n_workers)]
            for i in range(n_workers):
                self._spec = self._started(i)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.children)

    def spec(self) -> EnvSpec:
        assert self._spec is not None
        return self._spec

    def _started(self, i: int) -> EnvSpec:
        """Wait for child ``i``'s runner to be built; its spec (or its error raised here)."""
        c = self.children[i]
        if not wait_ready([c.conn, c.proc.sentinel], timeout=self.timeout_s) or not c.conn.poll():
            c.proc.join(timeout=1)
            code = c.proc.exitcode
            c.kill()
            why = (f"did not start within {self.timeout_s:.0f} s" if code is None
                   else f"died while starting (exit code {code})")
            raise WorkerLost(f"rollout worker process {i} {why}.")
        return self._reply(i)

    def _reply(self, i: int) -> Any:
        status, payload = self.children[i].conn.recv()
        if status == "error":
            raise WorkerError(f"rollout worker process {self.children[i].proc.pid} failed:\n{payload}")
        return payload

    def _replace(self, i: int) -> None:
        self.children[i].kill()
        self.children[i] = _Child(self.ctx, self.factory, self.config)
        self._started(i)

    def run(self, weights: dict[str, torch.Tensor], tasks: list[EpisodeTask]) -> list[Trajectory]:
        w_np = numpy_weights(weights)
        queue = list(range(len(tasks)))  # task indices still to play
        results: list[Trajectory | None] = [None] * len(tasks)
        busy: dict[int, tuple[int, float]] = {}  # child -> (task index, start time)
        fresh = set(range(len(self.children)))  # children still on the previous weights
        losses = [0] * len(tasks)
        while queue or busy:
            for i in range(len(self.children)):
                if queue and i not in busy:
                    k = queue.pop(0)
                    try:
                        if i in fresh:
                            self.children[i].conn.send(("weights", w_np))
                            fresh.discard(i)
                        self.children[i].conn.send(("run", tasks[k]))
                    except (BrokenPipeError, OSError):
                        pass  # dead: noticed below through its sentinel
                    busy[i] = (k, time.time())
            handles = {}
            for i in busy:
                handles[self.children[i].conn] = i
                handles[self.children[i].proc.sentinel] = i
            ready = wait_ready(list(handles), timeout=1.0)
            lost: dict[int, str] = {}
            for h in ready:
                i = handles[h]
                if i in lost or i not in busy:
                    continue
                c = self.children[i]
                if c.conn.poll():
                    try:
                        traj = self._reply(i)
                    except (EOFError, OSError):
                        traj = None  # its end of the pipe closed: it died (checked below)
                    if traj is not None:
                        results[busy.pop(i)[0]] = self._seen(traj)
                        continue
                c.proc.join(timeout=0.5)
                if not c.proc.is_alive():
                    lost[i] = f"died (exit code {c.proc.exitcode})"
            for i, (k, t0) in busy.items():
                if i not in lost and time.time() - t0 > self.timeout_s:
                    lost[i] = f"hung (no episode after {self.timeout_s:.0f} s)"
            for i, why in lost.items():
                k, _ = busy.pop(i)
                losses[k] += 1
                if losses[k] > MAX_RESTARTS:
                    raise WorkerLost(f"rollout worker process {i} {why} while playing episode {tasks[k].number} "
                                     f"of worker {tasks[k].worker} (seed {tasks[k].seed}), {losses[k]} times in a "
                                     "row; stopping (the last checkpoint resumes the run).")
                self._replace(i)
                fresh.add(i)
                queue.insert(0, k)
        return [r for r in results if r is not None]

    def close(self) -> None:
        for c in self.children:
            try:
                if c.proc.is_alive():
                    c.conn.send(("close", None))
                    c.proc.join(timeout=10)
            except (BrokenPipeError, OSError):
                pass
            c.kill()


# ---------------------------------------------------------------------- Ray
def import_ray() -> Any:
    """Ray, or one sentence saying how to install it (it is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray, which is not installed: pip install -e '.[ray]'") from None
    return ray


def check_ray_address(address: str | None, timeout_s: float = 10.0) -> None:
    """An unreachable cluster address in one sentence (None: a private local Ray, nothing to check)."""
    if not address:
        return
    target = address
    if address == "auto":
        try:  # RAY_ADDRESS, or the cluster `ray start` recorded on this machine
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto") or ""
        except Exception:
            target = ""
        if not target:
            raise UserError("--ray-address auto found no running Ray cluster on this machine (start one with "
                            "`ray start --head`, or give HOST:PORT).")
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=min(timeout_s, 10.0)).close()
    except (OSError, ValueError):
        raise UserError(f"cannot reach a Ray cluster at {address!r} (nothing answers at {target}; start one "
                        "with `ray start --head`, or check --ray-address).") from None


def connect_ray(address: str | None, n_workers: int, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> bool:
    """Join the Ray cluster at ``address`` (``auto`` or HOST:PORT), or start a private local Ray
    (None) unless one is running in this process already. True when this call started Ray (and
    ``RayBackend.close`` should shut it down). Never hangs: ``ray.init`` retries an unreachable
    (or refusing) cluster forever, so the address is first checked with a TCP connection and then
    ``ray.init`` runs under a SIGALRM of ``timeout_s`` (it must run in the main thread)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    check_ray_address(address, timeout_s)
    # workers import what this process imports (as spawned processes do): the same sys.path
    path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                                  runtime_env={"env_vars": {"PYTHONPATH": path}})
    if address:
        kwargs["address"] = address
        # `ray start` (2.60) turns token authentication on and leaves the token in ~/.ray/auth_token;
        # a driver that does not send it is refused and ray.init retries forever
        if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").exists():
            try:  # Ray's own switch (refreshes its config read at import); RAY_AUTH_MODE=token before start
                from ray._private.authentication.authentication_token_setup import (
                    _enable_token_auth,
                )

                _enable_token_auth()
            except Exception:
                os.environ["RAY_AUTH_MODE"] = "token"
    else:
        kwargs.update(address="local", num_cpus=max(os.cpu_count() or 1, n_workers))  # a new Ray, never a found one
    where = f"the Ray cluster at {address!r}" if address else "a local Ray"
    alarm = threading.current_thread() is threading.main_thread()
    if alarm:  # ray.init must run in the main thread: bound it with SIGALRM instead of a thread

        def expired(*_: Any) -> None:
            raise TimeoutError

        previous = signal.signal(signal.SIGALRM, expired)
        signal.alarm(int(timeout_s))
    try:
        ray.init(**kwargs)
    except TimeoutError:
        ray.shutdown()
        raise UserError(f"could not connect to {where} within {timeout_s:.0f} s (is it a Ray {ray.__version__} head "
                        "node, and if it uses token authentication, is RAY_AUTH_MODE=token set with its "
                        "token?).") from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"could not connect to {where}: {first}") from None
    finally:
        if alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    return True


class RayBackend(RolloutBackend):
    """One Ray actor per worker (``EpisodeRunner`` as an actor), spread over the cluster's nodes."""

    name = "ray"

    def __init__(self, factory: Callable[[], Any], config: Any, n_workers: int, address: str | None = None,
                 timeout_s: float = EPISODE_TIMEOUT_S):
        super().__init__()
        self.ray = ray = import_ray()
        self.owns_ray = connect_ray(address, n_workers)
        self.factory, self.config, self.timeout_s = factory, config, timeout_s
        self.actor_cls = ray.remote(num_cpus=1, max_restarts=0)(EpisodeRunner)
        self.actors: list[Any] = []
        try:
            cpus = ray.cluster_resources().get("CPU", 0)
            if cpus < n_workers:
                raise UserError(f"the Ray cluster has {cpus:g} CPUs for {n_workers} rollout workers (each needs "
                                "one): add nodes or use fewer --workers.")
            self.actors = [self._new_actor() for _ in range(n_workers)]
            self._spec = self._get(self.actors[0].env_spec.remote(), "start")
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.actors)

    def spec(self) -> EnvSpec:
        return self._spec

    def _new_actor(self) -> Any:
        return self.actor_cls.options(scheduling_strategy="SPREAD").remote(self.factory, self.config)

    def _get(self, ref: Any, what: str) -> Any:
        ray = self.ray
        try:
            return ray.get(ref, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise WorkerLost(f"a Ray rollout worker did not {what} within {self.timeout_s:.0f} s.") from None
        except ray.exceptions.RayTaskError as exc:
            raise WorkerError(f"a Ray rollout worker failed:\n{exc}") from None
        except ray.exceptions.RayActorError as exc:
            raise WorkerLost(f"a Ray rollout worker died while trying to {what}: "
                             f"{str(exc).strip().splitlines()[0]}") from None

    def run(self, weights: dict[str, torch.Tensor], tasks: list[EpisodeTask]) -> list[Trajectory]:
        ray = self.ray
        w_ref = ray.put(numpy_weights(weights))
        queue = list(range(len(tasks)))
        results: list[Trajectory | None] = [None] * len(tasks)
        busy: dict[Any, tuple[int, int, float]] = {}  # ref -> (actor, task index, start)
        fresh = set(range(len(self.actors)))
        losses = [0] * len(tasks)
        while queue or busy:
            idle = [i for i in range(len(self.actors)) if i not in {b[0] for b in busy.values()}]
            for i in idle:
                if not queue:
                    break
                k = queue.pop(0)
                if i in fresh:
                    self.actors[i].set_weights.remote(w_ref)  # actor calls run in order
                    fresh.discard(i)
                busy[self.actors[i].run.remote(tasks[k])] = (i, k, time.time())
            done, _ = ray.wait(list(busy), num_returns=1, timeout=1.0)
            lost: list[tuple[Any, str]] = []
            for ref in done:
                try:
                    results[busy[ref][1]] = self._seen(ray.get(ref))
                    busy.pop(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise WorkerError(f"a Ray rollout worker failed:\n{exc}") from None
                except ray.exceptions.RayActorError:
                    lost.append((ref, "died"))
            now = time.time()
            lost += [(ref, f"hung (no episode after {self.timeout_s:.0f} s)")
                     for ref, (_, _, t0) in busy.items() if now - t0 > self.timeout_s and ref not in done]
            for ref, why in lost:
                i, k, _ = busy.pop(ref)
                losses[k] += 1
                if losses[k] > MAX_RESTARTS:
                    raise WorkerLost(f"Ray rollout worker {i} {why} while playing episode {tasks[k].number} of "
                                     f"worker {tasks[k].worker} (seed {tasks[k].seed}), {losses[k]} times in a "
                                     "row; stopping (the last checkpoint resumes the run).")
                ray.kill(self.actors[i], no_restart=True)
                self.actors[i] = self._new_actor()
                fresh.add(i)
                queue.insert(0, k)
        return [r for r in results if r is not None]

    def close(self) -> None:
        ray = self.ray
        for a in self.actors:
            try:
                ray.get(a.close.remote(), timeout=10)
            except Exception:
                pass
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        self.actors = []
        if self.owns_ray and ray.is_initialized():
            ray.shutdown()


def resolve_backend(backend: str, n_workers: int) -> str:
    """``auto`` -> inprocess for one worker, process otherwise; unknown names refused."""
    if backend not in BACKENDS:
        raise UserError(f"unknown rollout backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    if backend == "auto":
        return "inprocess" if n_workers == 1 else "process"
    return backend


def check_backend(backend: str, ray_address: str | None = None) -> None:
    """Refuse an unknown backend, ``ray`` without Ray installed, or an unreachable Ray cluster,
    before a run starts its work (demonstrations may take minutes)."""
    resolve_backend(backend, 1)
    if backend == "ray":
        import_ray()
        check_ray_address(ray_address)


def make_backend(factory: Callable[[], Any], config: Any) -> RolloutBackend:
    """The whole-episode workers ``config`` asks for (``backend``, ``n_workers``, ``ray_address``)."""
    name = resolve_backend(config.backend, config.n_workers)
    if name == "inprocess":
        return InProcessBackend(factory, config)
    if name == "process":
        return ProcessBackend(factory, config, config.n_workers, config.start_method)
    return RayBackend(factory, config, config.n_workers, config.ray_address)
