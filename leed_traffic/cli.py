"""Command line: ``leed-traffic build | evaluate | cities | ...``.

User errors (``UserError``) print one sentence and exit with code 2, without a traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from leed_traffic.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Traffic-signal control for real cities: OSM -> SUMO -> LEED -> signal plans.")
console = Console()
err = Console(stderr=True)


def user_errors(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(code=130) from None

    return wrapper


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


CityOpt = typer.Option(..., "--city", "-c", help="Bundled city, RESCO scenario, OSM file path, or 'place:<name>'.")


@app.command()
@user_errors
def cities() -> None:
    """List the bundled cities and RESCO scenarios."""
    from leed_traffic.cities import RESCO_SCENARIOS, bundled_cities, resolve_city

    t = Table("city", "source", "demand (veh/h peak)", "episode")
    for name in bundled_cities():
        s = resolve_city(name)
        t.add_row(name, s.description, f"{s.demand.veh_per_hour:g}", f"{s.begin}-{s.end} s")
    for name, win in RESCO_SCENARIOS.items():
        t.add_row(name, "RESCO (from the sumo-rl package)", "RESCO routes", f"{win['begin']}-{win['end']} s")
    console.print(t)


@app.command()
@user_errors
def build(
    city: str = CityOpt,
    force: bool = typer.Option(False, help="Rebuild even if cached."),
    veh_per_hour: Optional[float] = typer.Option(None, min=1, help="Override the city's peak demand (veh/h)."),
    check: bool = typer.Option(True, help="Run one fixed-time hour and refuse demand that gridlocks."),
) -> None:
    """Build the network and scenario; print the scenario directory and the number of agents."""
    from dataclasses import replace

    from leed_traffic.cities import resolve_city
    from leed_traffic.evaluate import check_demand
    from leed_traffic.scenario import build_scenario

    spec = resolve_city(city)
    if veh_per_hour is not None:
        if spec.kind == "resco":
            raise UserError("RESCO scenarios come with their own routes; --veh-per-hour applies to OSM cities.")
        spec = replace(spec, demand=replace(spec.demand, veh_per_hour=veh_per_hour))
    with console.status(f"building {spec.name}"):
        s = build_scenario(spec, force=force)
    console.print(f"scenario: {s.dir}")
    console.print(f"agents: {s.n_agents} (of {s.n_traffic_lights} traffic lights)")
    console.print(f"vehicles per episode: {', '.join(map(str, s.vehicles_per_route_file))}")
    if check:
        with console.status("checking the demand under fixed time"):
            row = check_demand(s)
        console.print(f"fixed time: mean delay {row['mean_delay']:.1f} s, teleports {row['teleports']}, "
                      f"never inserted {row['never_inserted']} of {row['vehicles']} vehicles")


@app.command()
@user_errors
def evaluate(
    city: str = CityOpt,
    controller: list[str] = typer.Option(
        ["all"], "--controller", help="fixed, webster, actuated, max-pressure, greedy, policy, or all (repeatable)."),
    episodes: int = typer.Option(1, min=1, help="Episodes (seeds) per controller."),
    seconds: Optional[int] = typer.Option(None, min=1, help="Episode length (default: the scenario's)."),
    seed: Optional[int] = typer.Option(None, help="First seed (default: the scenario's held-out seeds)."),
    run: Optional[Path] = typer.Option(None, help="Training run directory (for --controller policy)."),
    argmax: bool = typer.Option(False, "--argmax", help="Policy takes its most likely phase instead of sampling."),
    out: Path = typer.Option(Path("runs/evaluate"), help="Writes OUT/metrics.csv."),
) -> None:
    """Evaluate controllers on held-out seeds; print a table and write metrics.csv."""
    from leed_traffic.controllers import get_controller
    from leed_traffic.evaluate import ALL_CLASSICAL, evaluate as run_eval, summarize

    names = list(ALL_CLASSICAL) if "all" in controller else controller
    ctrls = [get_controller(n, run=run, sample=not argmax) for n in names]
    df = run_eval(city, ctrls, episodes=episodes, seconds=seconds, seed=seed, out=out)
    summary = summarize(df)
    t = Table("controller", "mean delay (s)", "travel time (s)", "waiting (s)", "queue (veh)", "throughput",
              "teleports", "episodes", title=f"{city}: mean ± std over episodes")
    for _, r in summary.iterrows():
        t.add_row(r["controller"], f"{r.mean_delay:.1f} ± {r.mean_delay_std:.1f}",
                  f"{r.mean_travel_time:.1f}", f"{r.mean_waiting_time:.1f}", f"{r.mean_queue:.1f}",
                  f"{r.throughput:.0f}", f"{r.teleports:.0f}", f"{r.episodes:.0f}")
    console.print(t)
    console.print(f"wrote {out / 'metrics.csv'}")


LLM_CHOICES = "auto, claude, openai, local, max-pressure, longest-queue"


@app.command()
@user_errors
def demos(
    city: str = CityOpt,
    llm: str = typer.Option("auto", "--llm", help=f"Demonstrator: {LLM_CHOICES}."),
    rounds: int = typer.Option(3, min=1, help="Generation + refinement rounds."),
    seconds: Optional[int] = typer.Option(None, min=1, help="Episode length (default: the scenario's)."),
    seed: int = typer.Option(0, help="Demand/SUMO seed of the rounds."),
    model: Optional[str] = typer.Option(None, help="Model name override for claude/openai."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default runs/demos/<city>-<llm>-s<seed>)."),
) -> None:
    """Generate expert demonstrations with an LLM (or a reference expert), refined over rounds."""
    from leed_traffic.demos import generate_demos

    path = generate_demos(city, llm=llm, rounds=rounds, seconds=seconds, out=out, seed=seed, model=model)
    console.print(f"demonstrations: {path}")


@app.command()
@user_errors
def train(
    city: str = CityOpt,
    algo: str = typer.Option("leed", help="leed, ippo, mappo or bc."),
    llm: str = typer.Option("auto", "--llm", help=f"Demonstrator for leed/bc: {LLM_CHOICES}."),
    demos_dir: Optional[Path] = typer.Option(None, "--demos", help="Use this demonstration dataset instead of generating one."),
    demo_rounds: int = typer.Option(2, min=1, help="Refinement rounds when generating demonstrations."),
    episodes: int = typer.Option(40, min=1, help="Training budget in episodes (all agents act every decision)."),
    seconds: Optional[int] = typer.Option(None, min=1, help="Episode length (default: the scenario's)."),
    workers: int = typer.Option(1, min=1, help="Rollout worker processes (one SUMO each)."),
    seed: int = typer.Option(0, help="Seed of the run (networks, episodes, demonstrations)."),
    eval_episodes: int = typer.Option(3, min=0, help="Held-out evaluation episodes per controller (0: skip)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default runs/<city>-<algo>-s<seed>)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from its last checkpoint."),
    reward: Optional[str] = typer.Option(None, help="Reward: diff-waiting-time (default, sumo-rl's), queue or pressure."),
    observation: Optional[str] = typer.Option(None, help="Observation: default (sumo-rl's) or pressure."),
    enforce_max_green: bool = typer.Option(
        True, help="Force a phase change after max green (50 s), as real controllers do. Without it (sumo-rl's "
        "rule) an agent can hold a phase forever, which gridlocks OSM cities (docs/leed.md)."),
) -> None:
    """Train LEED (or a baseline), then evaluate it against the classical controllers."""
    from leed_traffic.dataset import DemoDataset
    from leed_traffic.learn import ALGOS, CheckpointError, TrainConfig
    from leed_traffic.learn import train as run_training
    from leed_traffic.scenario import build_scenario

    if algo not in ALGOS:
        raise UserError(f"Unknown --algo {algo!r}; choose one of {', '.join(ALGOS)}.")
    scenario = build_scenario(city)
    run_dir = out or Path("runs") / f"{scenario.city}-{algo}-s{seed}"
    length = seconds or (scenario.end - scenario.begin)
    steps_per_episode = max(1, length // scenario.delta_time)
    env_options: dict = {"seconds": seconds} if seconds else {}
    if reward:
        from leed_traffic.rewards import get_reward

        get_reward(reward)  # unknown name -> the list
        env_options["reward"] = reward
    if observation:
        from leed_traffic.observations import get_observation

        get_observation(observation)
        env_options["observation"] = observation
    if enforce_max_green:
        env_options["enforce_max_green"] = True
    dataset = None
    if algo in ("leed", "bc"):
        if demos_dir is None:
            from leed_traffic.demos import generate_demos

            console.print(f"[bold]demonstrations[/] ({llm}, {demo_rounds} rounds) -> {run_dir / 'demos'}")
            demos_dir = generate_demos(city, llm=llm, rounds=demo_rounds, seconds=seconds,
                                       out=run_dir / "demos", seed=seed,
                                       env_options={k: v for k, v in env_options.items() if k != "seconds"})
        try:
            dataset = DemoDataset.load(demos_dir)
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(str(exc)) from exc
    cfg = TrainConfig(algo=algo, total_env_steps=episodes * steps_per_episode, n_workers=workers, seed=seed)
    try:
        run_training(city, cfg, run_dir, dataset, resume=resume, env_options=env_options)
    except CheckpointError as exc:
        raise UserError(f"{exc}") from exc
    except ValueError as exc:
        raise UserError(f"{exc}; check --demos / --llm ({LLM_CHOICES}).") from exc
    console.print(f"run: {run_dir}")
    if eval_episodes:
        _compare(city, run_dir, eval_episodes, seconds)
        from leed_traffic.report import write_report

        with console.status("writing the report"):
            md, html = write_report(run_dir)
        console.print(f"report: {html}")


def _compare(city: str, run_dir: Path, episodes: int, seconds: Optional[int]) -> None:
    """Final policy vs the classical controllers on held-out seeds -> RUN/comparison.{csv,md}."""
    from leed_traffic.controllers import get_controller
    from leed_traffic.evaluate import ALL_CLASSICAL, evaluate as run_eval, evaluate_max_green, summarize, write_csv_atomic

    import pandas as pd

    policy = get_controller("policy", run=run_dir, sample=True)
    ctrls = [get_controller(n) for n in ALL_CLASSICAL] + [policy, get_controller("policy", run=run_dir, sample=False)]
    df = run_eval(city, ctrls, episodes=episodes, seconds=seconds)
    if policy.env_options.get("enforce_max_green"):
        # the controllers that decide through the env, under the same phase rule as the policy
        df = pd.concat([df, evaluate_max_green(city, episodes=episodes, seconds=seconds)], ignore_index=True)
    write_csv_atomic(df, run_dir / "evaluation" / "metrics.csv")
    summary = summarize(df)
    write_csv_atomic(summary, run_dir / "comparison.csv")
    lines = ["| controller | mean delay (s) | travel time (s) | throughput | teleports |", "|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r.controller} | {r.mean_delay:.1f} ± {r.mean_delay_std:.1f} | {r.mean_travel_time:.1f} "
                     f"| {r.throughput:.0f} | {r.teleports:.0f} |")
    (run_dir / "comparison.md").write_text("\n".join(lines) + "\n")
    t = Table("controller", "mean delay (s)", "travel time (s)", "throughput", "teleports",
              title=f"{city}: held-out seeds, {episodes} episode(s) each")
    for _, r in summary.iterrows():
        t.add_row(r.controller, f"{r.mean_delay:.1f} ± {r.mean_delay_std:.1f}", f"{r.mean_travel_time:.1f}",
                  f"{r.throughput:.0f}", f"{r.teleports:.0f}")
    console.print(t)


@app.command()
@user_errors
def export(
    run: Path = typer.Option(..., "--run", help="Training run directory."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default RUN/export)."),
    force: bool = typer.Option(False, help="Replace an existing export."),
    period: int = typer.Option(900, min=60, help="Length of a time-of-day plan period, s."),
    episodes: int = typer.Option(1, min=1, help="Held-out episodes evaluating the exported plan."),
) -> None:
    """Export signal plans (SUMO tlLogic + timing table) and the policies (ONNX)."""
    from leed_traffic.export import export_run

    path = export_run(run, out, period_s=period, force=force, episodes=episodes)
    console.print(f"exported: {path}")
    for name in ("plans.add.xml", "timings.csv", "obs_spec.json", "comparison.csv"):
        if (path / name).exists():
            console.print(f"  {path / name}")


@app.command()
@user_errors
def gui(
    city: Optional[str] = typer.Option(None, "--city", "-c", help="City (default: the run's)."),
    run: Optional[Path] = typer.Option(None, help="Training run: its policy drives the lights live."),
    plan: Optional[Path] = typer.Option(None, help="Exported plan (export dir or plans.add.xml)."),
) -> None:
    """Open sumo-gui with the trained policy (live) or an exported plan."""
    from leed_traffic.viz import gui as open_gui

    open_gui(city, run, plan)


@app.command()
@user_errors
def snapshot(
    out: Path = typer.Option(..., "--out", help="PNG file to write."),
    city: Optional[str] = typer.Option(None, "--city", "-c", help="City (default: the run's)."),
    run: Optional[Path] = typer.Option(None, help="Training run whose policy drives the lights."),
    plan: Optional[Path] = typer.Option(None, help="Exported plan instead of a policy."),
    time: float = typer.Option(300.0, min=0, help="Seconds after the episode begins."),
    size: str = typer.Option("1280x800", help="WIDTHxHEIGHT in pixels."),
    boundary: Optional[str] = typer.Option(None, help="Zoom to XMIN,YMIN,XMAX,YMAX (network metres)."),
) -> None:
    """Render sumo-gui headlessly (Xvfb) to a PNG."""
    from leed_traffic.viz import snapshot as shoot

    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must look like 1280x800 (got {size!r}).") from None
    box = None
    if boundary:
        try:
            box = tuple(float(v) for v in boundary.split(","))
            assert len(box) == 4 and box[0] < box[2] and box[1] < box[3]
        except (ValueError, AssertionError):
            raise UserError(f"--boundary must be XMIN,YMIN,XMAX,YMAX with XMIN<XMAX, YMIN<YMAX (got {boundary!r}).") from None
    path = shoot(city, run, time=time, out=out, size=(w, h), plan=plan, boundary=box)
    console.print(f"snapshot: {path}")


@app.command()
@user_errors
def report(
    run: Path = typer.Option(..., "--run", help="Training run directory."),
    baseline: list[Path] = typer.Option([], "--baseline", help="Other runs (e.g. IPPO) to draw as curves."),
) -> None:
    """Write RUN/report.md and a self-contained RUN/report.html."""
    from leed_traffic.report import write_report

    md, html = write_report(run, baselines=baseline or None)
    console.print(f"report: {md}\nreport: {html}")


def run() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
