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
from rich.markup import escape
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
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
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
        src = (f"RESCO {win['map']} with {' '.join(win['sumo_args'])} (a labelled variant)" if "map" in win
               else "RESCO (from the sumo-rl package)")
        t.add_row(name, src, "RESCO routes", f"{win['begin']}-{win['end']} s")
    console.print(t)


@app.command()
@user_errors
def build(
    city: str = CityOpt,
    force: bool = typer.Option(False, help="Rebuild even if cached (a fitted demand is searched again)."),
    demand: Optional[float] = typer.Option(
        None, "--demand", "--veh-per-hour", min=1, metavar="VEH_PER_H",
        help="Peak demand (veh/h), instead of the city's calibrated or fitted volume."),
    fit_demand: bool = typer.Option(
        False, "--fit-demand", help="Fit the demand to the network even for a bundled city (a city without a "
        "calibrated definition, an OSM file or place:, always is): the highest volume SUMO's fixed-time programs "
        "run without gridlock, x 0.85."),
    counts: Optional[Path] = typer.Option(
        None, "--counts", help="Measured edge counts (CSV edge_id,count[,begin,end] or SUMO edgeData XML): the "
        "demand becomes routes that reproduce them (SUMO's routeSampler)."),
    fit_tolerance: Optional[float] = typer.Option(
        None, "--fit-tolerance", min=0.01, max=0.5, help="Demand search: stop when the gridlock bracket is "
        "within this ratio (default 0.10)."),
    check: bool = typer.Option(True, help="Run one fixed-time hour and refuse demand that gridlocks."),
    lefthand: Optional[bool] = typer.Option(
        None, "--lefthand/--righthand", help="Left-hand traffic (UK, Japan, Australia, ...); default: the city's "
        "definition (bundled london: left-hand), right-hand for an OSM file or place:."),
) -> None:
    """Build the network and scenario; print the scenario directory, the agents and the demand."""
    import json

    from leed_traffic.cities import resolve_city, with_demand
    from leed_traffic.evaluate import check_demand
    from leed_traffic.scenario import build_scenario

    spec = with_demand(resolve_city(city, lefthand=lefthand), veh_per_hour=demand, fit=fit_demand, counts=counts)
    settings = None
    if fit_tolerance is not None:
        from leed_traffic.calibrate import FitSettings

        settings = FitSettings(tolerance=fit_tolerance)
    with console.status(f"building {spec.name}") as status:
        def say(line: str) -> None:
            console.print(f"  demand fit: {line}", highlight=False)
            status.update(f"{spec.name}: fitting the demand to the network ({line.split(':')[0]})")

        s = build_scenario(spec, force=force, progress=say, fit_settings=settings)
    meta = json.loads((s.dir / "scenario.json").read_text())
    console.print(f"scenario: {s.dir}")
    console.print(f"agents: {s.n_agents} (of {s.n_traffic_lights} traffic lights)")
    console.print(f"demand: {_demand_summary(s, meta, given_on_command_line=demand is not None)}", highlight=False)
    console.print(f"vehicles per episode: {', '.join(map(str, s.vehicles_per_route_file))}")
    if check:
        with console.status("checking the demand under fixed time"):
            row = check_demand(s)
        console.print(f"fixed time: mean delay {row['mean_delay']:.1f} s, teleports {row['teleports']}, "
                      f"never inserted {row['never_inserted']} of {row['vehicles']} vehicles")


def _demand_summary(s, meta: dict, given_on_command_line: bool) -> str:
    """One line: how many vehicles the scenario carries and where that number comes from."""
    source = s.demand_source or meta.get("demand_source", "")
    if source == "fitted" and "demand_fit" in meta:
        from leed_traffic.calibrate import DemandFit

        return DemandFit.from_json(meta["demand_fit"]).summary()
    if source == "counts" and "counts" in meta:
        c = meta["counts"]
        return (f"from counts {c['file']} ({c['edges']} edges, {c['intervals']} interval(s)): routes reproduce "
                f"{c['routed']:,} of {c['counted']:,.0f} counted vehicle passages, worst count off by "
                f"{100 * c['max_relative_error']:.0f} %")
    if source == "resco":
        return "RESCO's own routes"
    vph = s.veh_per_hour if s.veh_per_hour is not None else meta.get("demand", {}).get("veh_per_hour")
    why = "--demand" if given_on_command_line else "the city's calibrated volume"
    return f"{vph:,.0f} veh/h peak ({why})" if vph is not None else "random trips"


@app.command()
@user_errors
def evaluate(
    city: str = CityOpt,
    controller: list[str] = typer.Option(
        ["all"], "--controller", help="fixed, webster, actuated, max-pressure, greedy, policy (a run's, --run), "
        "pretrained (the shipped policy, any city), or all (repeatable)."),
    episodes: int = typer.Option(1, min=1, help="Episodes (seeds) per controller."),
    seconds: Optional[int] = typer.Option(None, min=1, help="Episode length (default: the scenario's)."),
    seed: Optional[int] = typer.Option(None, help="First seed (default: the scenario's held-out seeds)."),
    run: Optional[Path] = typer.Option(None, help="Training run directory (for --controller policy)."),
    argmax: bool = typer.Option(False, "--argmax", help="Policy takes its most likely phase (default: the run's "
                                "deployed mode, chosen on its training seeds; pretrained: sampled)."),
    sampled: bool = typer.Option(False, "--sampled", help="Policy samples its phase, as PPO trained it."),
    pretrained: Optional[Path] = typer.Option(None, "--pretrained", help="Pretrained-policy file for --controller "
                                              "pretrained (default: the one shipped with leed-traffic)."),
    out: Path = typer.Option(Path("runs/evaluate"), help="Writes OUT/metrics.csv."),
) -> None:
    """Evaluate controllers on held-out seeds; print a table and write metrics.csv."""
    from leed_traffic.controllers import get_controller
    from leed_traffic.evaluate import ALL_CLASSICAL, evaluate as run_eval, summarize

    if argmax and sampled:
        raise UserError("Pass --argmax or --sampled, not both (neither: the run's deployed mode).")
    names = list(ALL_CLASSICAL) if "all" in controller else controller
    mode = False if argmax else True if sampled else None
    ctrls = [get_controller(n, run=run, sample=mode, pretrained=str(pretrained) if pretrained else None)
             for n in names]
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


LLM_CHOICES = "auto, claude, openai, local, max-pressure, longest-queue, random"


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
    episodes: int = typer.Option(1, min=1, help="Episodes per round, on seeds seed, seed+1, ... (each its own "
                                 "chain of refinement)."),
    workers: int = typer.Option(1, min=1, help="Episodes played at once."),
    backend: str = typer.Option("auto", "--backend", help="Where the episodes run: inprocess, process or ray "
                                "(default auto: inprocess for one worker, process otherwise)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="The Ray cluster for --backend ray, "
                                              "'auto' or HOST:PORT (default: a private local Ray)."),
) -> None:
    """Generate expert demonstrations with an LLM (or a reference expert), refined over rounds."""
    from leed_traffic.demos import generate_demos

    path = generate_demos(city, llm=llm, rounds=rounds, seconds=seconds, out=out, seed=seed, model=model,
                          episodes=episodes, workers=workers, backend=backend, ray_address=ray_address)
    console.print(f"demonstrations: {path}")


@app.command()
@user_errors
def train(
    city: Optional[str] = typer.Option(None, "--city", "-c", help="Bundled city, RESCO scenario, OSM file path, "
                                       "or 'place:<name>' (scenario.city; default helsinki)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Experiment TOML file (or a run's config.json "
                                          "to repeat it); flags and --set override it."),
    set_: list[str] = typer.Option([], "--set", help="Any setting as SECTION.FIELD=VALUE (sections: scenario, env, "
                                   "demos, train, eval), e.g. --set train.ent_coef=0.02; repeatable."),
    algo: Optional[str] = typer.Option(None, help="train.algo: leed (default), ippo, mappo, bc or reled."),
    llm: Optional[str] = typer.Option(None, "--llm", help=f"demos.llm, the demonstrator: {LLM_CHOICES}."),
    demos_dir: Optional[Path] = typer.Option(None, "--demos", help="demos.path: use this demonstration dataset."),
    demo_rounds: Optional[int] = typer.Option(None, min=1, help="demos.rounds: refinement rounds (default 2)."),
    episodes: Optional[int] = typer.Option(None, min=1, help="train.episodes: training budget in episodes (default 40)."),
    seconds: Optional[int] = typer.Option(None, min=1, help="env.seconds: episode length (default: the scenario's)."),
    workers: Optional[int] = typer.Option(None, min=1, help="train.n_workers: rollout worker processes."),
    backend: Optional[str] = typer.Option(None, "--backend", help="train.backend: where the rollout workers run: "
                                          "inprocess, process or ray (default auto: inprocess for one worker, "
                                          "process otherwise)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="train.ray_address: the Ray cluster for "
                                              "--backend ray, 'auto' or HOST:PORT (default: a private local Ray)."),
    seed: Optional[int] = typer.Option(None, help="train.seed: seed of the run (episodes, demonstrations)."),
    eval_episodes: Optional[int] = typer.Option(None, min=0, help="eval.episodes: held-out episodes per controller "
                                                "(default 3; 0 skips evaluation)."),
    reward: Optional[str] = typer.Option(None, help="env.reward: diff-waiting-time (default), queue, pressure or queue-backlog."),
    observation: Optional[str] = typer.Option(None, help="env.observation: default (sumo-rl's), pressure, backlog or pressure-backlog."),
    enforce_max_green: Optional[bool] = typer.Option(
        None, "--enforce-max-green/--no-enforce-max-green", help="env.enforce_max_green (default on): force a "
        "phase change after max green (50 s), as real controllers do; off = sumo-rl's rule, which gridlocks OSM cities."),
    init: Optional[str] = typer.Option(None, "--init", help="train.init_policy: start from 'pretrained' (the shipped "
                                       "policy) or a pretrained-policy file, and fine-tune it; sets train.policy=phase "
                                       "and the env options it was trained under."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default runs/<city>-<algo>-s<seed>)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from its last checkpoint."),
) -> None:
    """Train LEED (or a baseline), then evaluate it against the classical controllers."""
    from leed_traffic.config import ExperimentConfig
    from leed_traffic.pipeline import run_experiment

    cfg = ExperimentConfig.load(config) if config else ExperimentConfig()
    shortcuts = {"scenario.city": city, "train.algo": algo, "demos.llm": llm, "demos.path": demos_dir,
                 "demos.rounds": demo_rounds, "train.episodes": episodes, "env.seconds": seconds,
                 "train.n_workers": workers, "train.backend": backend, "train.ray_address": ray_address,
                 "train.seed": seed, "eval.episodes": eval_episodes,
                 "env.reward": reward, "env.observation": observation, "env.enforce_max_green": enforce_max_green}
    for key, value in shortcuts.items():
        if value is not None:
            cfg.set(key, str(value) if isinstance(value, Path) else value, source="the command line")
    if init is not None:
        cfg.init_from(init, source="--init")
    cfg.apply(set_)
    from leed_traffic.learn.workers import check_backend

    check_backend(cfg.train.backend, cfg.train.ray_address)  # unknown, Ray missing or unreachable: before any work
    run_experiment(cfg, out, resume=resume, say=lambda text: console.print(text, soft_wrap=True, highlight=False))


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
