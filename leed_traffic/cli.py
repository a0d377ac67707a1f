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
    out: Path = typer.Option(Path("runs/evaluate"), help="Writes OUT/metrics.csv."),
) -> None:
    """Evaluate controllers on held-out seeds; print a table and write metrics.csv."""
    from leed_traffic.controllers import get_controller
    from leed_traffic.evaluate import ALL_CLASSICAL, evaluate as run_eval, summarize

    names = list(ALL_CLASSICAL) if "all" in controller else controller
    ctrls = [get_controller(n, run=run) for n in names]
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


def run() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
