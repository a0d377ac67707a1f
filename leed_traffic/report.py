"""A training run's results as ``RUN/report.md`` and a self-contained ``RUN/report.html``.

Sections: the city map with the controlled intersections (coloured by their change in delay);
learning curves (episode return and mean delay vs environment steps and vs wall time, with a
sibling IPPO run and the classical controllers' held-out delays as lines); the comparison table
(mean ± std over held-out seeds, plus the exported fixed-time plan when ``RUN/export`` exists);
demonstration quality per refinement round; per-intersection change in delay vs fixed time
(best and worst ten).

Per-intersection delay (how it is measured): one episode per controller (fixed time and the
trained policy) on the scenario's first held-out seed, through ``evaluate.run_episode`` with
SUMO's ``--edgedata-output``; an intersection's delay is the time loss vehicles accumulate on its
incoming edges (SUMO ``timeLoss``: time lost against driving at the desired speed, i.e. queueing
and slowing at the approach) divided by the vehicles that used those edges (``entered`` +
``departed``), in s/vehicle. It attributes delay to the junction where it is incurred, so it needs
no route-to-junction matching; vehicles never inserted are not part of it (the network-wide mean
delay in the comparison table charges them). Cached in ``RUN/report/intersections.csv``.

PNG pictures are written to ``RUN/report/`` (referenced by the Markdown) and embedded as base64
in the HTML, so the HTML file can be mailed on its own.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from leed_traffic.errors import UserError
from leed_traffic.fileio import atomic_write, atomic_write_text
from leed_traffic.rundir import RunDir

log = logging.getLogger(__name__)

INTERSECTIONS_CSV = "intersections.csv"
CLASSICAL_STYLE = {"fixed": "#7f7f7f", "webster": "#1f77b4", "actuated": "#2ca02c", "max-pressure": "#9467bd",
                   "greedy": "#8c564b"}


# ---------------------------------------------------------------------------------- data
def find_baseline_runs(run: RunDir) -> list[RunDir]:
    """Sibling runs of the same city and scenario trained with IPPO (for the curves)."""
    out = []
    if run.algo == "ippo":
        return out
    for d in sorted(run.dir.parent.iterdir()) if run.dir.parent.is_dir() else []:
        if d == run.dir or not (d / "config.json").is_file() or not (d / "metrics.csv").is_file():
            continue
        try:
            other = RunDir.open(d, need_policy=False)
        except UserError:
            continue
        if other.algo == "ippo" and other.city == run.city and other.scenario_hash == run.scenario_hash:
            out.append(other)
    return out[:1]


def edge_delays(edgedata: Path) -> dict[str, tuple[float, float]]:
    """edge id -> (summed time loss in s, vehicles that entered or departed on it)."""
    out: dict[str, tuple[float, float]] = {}
    for _, el in ET.iterparse(str(edgedata), events=("end",)):
        if el.tag == "edge":
            tl, n = float(el.get("timeLoss", 0) or 0), float(el.get("entered", 0) or 0) + float(el.get("departed", 0) or 0)
            a, b = out.get(el.get("id"), (0.0, 0.0))
            out[el.get("id")] = (a + tl, b + n)
            el.clear()
    return out


def intersection_delays(run: RunDir, scenario, seed: int | None = None, work: Path | None = None) -> pd.DataFrame:
    """Per agent: mean delay on its approaches (s/veh) under fixed time and under the policy."""
    from leed_traffic.controllers import FixedTime, get_controller
    from leed_traffic.env import EnvConfig, LeedTrafficEnv
    from leed_traffic.evaluate import run_episode

    seed = scenario.eval_seeds[0] if seed is None else seed
    env = LeedTrafficEnv(scenario, EnvConfig(seconds=run.seconds, **run.env_options))
    in_edges = {a: sorted({ln.rsplit("_", 1)[0] for ln in t.in_lanes}) for a, t in env.topologies.items()}
    names = {a: t.name for a, t in env.topologies.items()}
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="leed-report-")) if own else work
    try:
        cols: dict[str, dict[str, float]] = {}
        for label, ctrl in (("fixed", FixedTime()), ("policy", get_controller("policy", run=run.path))):
            ed = work / f"{label}.edgedata.xml"
            run_episode(scenario, ctrl, seed, seconds=run.seconds, workdir=work / label,
                        env_options={"sumo_args": ("--edgedata-output", str(ed))})
            e = edge_delays(ed)
            cols[label] = {}
            cols[label + "_vehicles"] = {}
            for a, edges in in_edges.items():
                loss = sum(e.get(x, (0.0, 0.0))[0] for x in edges)
                n = sum(e.get(x, (0.0, 0.0))[1] for x in edges)
                cols[label][a] = loss / n if n else float("nan")
                cols[label + "_vehicles"][a] = n
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    df = pd.DataFrame({
        "intersection_id": list(in_edges), "street_names": [names[a] for a in in_edges],
        "fixed_delay_s": [cols["fixed"][a] for a in in_edges],
        "policy_delay_s": [cols["policy"][a] for a in in_edges],
        "fixed_vehicles": [cols["fixed_vehicles"][a] for a in in_edges],
        "policy_vehicles": [cols["policy_vehicles"][a] for a in in_edges],
    })
    df["change_s"] = df["policy_delay_s"] - df["fixed_delay_s"]
    df["change_pct"] = 100 * df["change_s"] / df["fixed_delay_s"].where(df["fixed_delay_s"] > 0)
    df["seed"] = seed
    return df


# ---------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    try:
        return atomic_write(path, lambda p: fig.savefig(p, dpi=110, bbox_inches="tight"))
    finally:
        _plt().close(fig)


def agent_positions(net, agents: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Centre of each traffic light: mean of its controlled lanes' end points."""
    pos = {}
    for a in agents:
        pts = []
        try:
            for in_lane, _out, _idx in net.getTLS(a).getConnections():
                pts.append(in_lane.getShape()[-1])
        except KeyError:
            pass
        if not pts:
            try:
                pts = [net.getNode(a).getCoord()]
            except KeyError:
                continue
        pos[a] = (float(np.mean([p[0] for p in pts])), float(np.mean([p[1] for p in pts])))
    return pos


def map_figure(scenario, agents: Sequence[str], path: Path, change: dict[str, float] | None = None) -> Path:
    from leed_traffic.netfile import read_net

    plt = _plt()
    from matplotlib.collections import LineCollection

    net = read_net(str(scenario.net_file))
    segs, widths = [], []
    for e in net.getEdges():
        if e.getFunction() == "internal":
            continue
        segs.append(e.getShape())
        widths.append(0.4 + 0.35 * e.getLaneNumber())
    x0, y0, x1, y1 = net.getBoundary()
    aspect = (y1 - y0) / max(x1 - x0, 1.0)
    fig, ax = plt.subplots(figsize=(7.5, max(3.5, min(10.0, 7.5 * aspect + 0.8))))
    ax.add_collection(LineCollection(segs, linewidths=widths, colors="#9a9a9a", zorder=1))
    pos = agent_positions(net, agents)
    xs = [pos[a][0] for a in agents if a in pos]
    ys = [pos[a][1] for a in agents if a in pos]
    if change and any(math.isfinite(change.get(a, float("nan"))) for a in pos):
        vals = np.array([change.get(a, np.nan) for a in agents if a in pos], dtype=float)
        lim = float(np.nanmax(np.abs(vals))) or 1.0
        sc = ax.scatter(xs, ys, c=vals, cmap="RdYlGn_r", vmin=-lim, vmax=lim, s=60, edgecolors="black",
                        linewidths=0.6, zorder=3)
        fig.colorbar(sc, ax=ax, shrink=0.8, label="change in approach delay vs fixed time (s/vehicle)")
        title = f"{scenario.city}: {len(xs)} controlled intersections (green = less delay than fixed time)"
    else:
        ax.scatter(xs, ys, c="#d62728", s=50, edgecolors="black", linewidths=0.6, zorder=3,
                   label="controlled intersection")
        ax.legend(loc="best", fontsize=8)
        title = f"{scenario.city}: {len(xs)} controlled intersections"
    ax.set_xlim(x0 - 20, x1 + 20)
    ax.set_ylim(y0 - 20, y1 + 20)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _smooth(y: pd.Series, n: int) -> pd.Series:
    w = max(1, n // 20)
    return y.rolling(w, min_periods=1).mean() if w > 1 else y


def curves_figure(run: RunDir, metrics: pd.DataFrame, path: Path, baselines: Sequence[tuple[str, pd.DataFrame]],
                  comparison: pd.DataFrame | None) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    series = [(run.algo, metrics, "#d62728")] + [(n, m, "#ff7f0e") for n, m in baselines]
    for col, (ylab, key) in enumerate((("episode return (sum over agents)", "return"),
                                       ("mean delay in training, never-inserted vehicles charged (s/vehicle)", "mean_delay"))):
        for row, (xlab, xkey) in enumerate((("environment steps (decisions)", "env_steps"), ("wall time (s)", "wall_time"))):
            ax = axes[row, col]
            for name, m, colour in series:
                if key not in m or xkey not in m:
                    continue
                d = m[[xkey, key]].apply(pd.to_numeric, errors="coerce").dropna()
                if d.empty:
                    continue
                ax.plot(d[xkey], d[key], color=colour, alpha=0.25, lw=0.8)
                ax.plot(d[xkey], _smooth(d[key], len(d)), color=colour, lw=1.8, marker="o" if len(d) < 10 else None,
                        ms=3, label=f"{name} (training)")
            if key == "mean_delay" and comparison is not None:
                for _, r in comparison.iterrows():
                    name = str(r["controller"])
                    style = CLASSICAL_STYLE.get(name)
                    if style is None:
                        style = "#d62728" if name == run.algo else "#ff7f0e" if "plan" in name else "black"
                    ax.axhline(float(r["mean_delay"]), color=style, ls="--", lw=1.1,
                               label=f"{name} (held-out eval)")
            ax.set_xlabel(xlab)
            ax.set_ylabel(ylab)
            ax.grid(alpha=0.3)
    h, lab = axes[0, 1].get_legend_handles_labels()
    if h:
        fig.legend(h, lab, loc="lower center", ncol=min(4, len(h)), fontsize=8, frameon=False)
    fig.suptitle(f"{run.city}: learning curves of {run.algo}", fontsize=11)
    fig.tight_layout(rect=(0, 0.08 if h else 0, 1, 0.97))
    return _save(fig, path)


def demos_figure(demos: dict[str, Any], path: Path) -> Path:
    plt = _plt()
    rounds = demos["rounds"]
    k = [r["round"] for r in rounds]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    a1.plot(k, [100 * r["validity"] for r in rounds], marker="o", color="#1f77b4")
    a1.set_ylim(0, 105)
    a1.set_xlabel("refinement round")
    a1.set_ylabel("valid answers (%)")
    a1.set_xticks(k)
    a1.grid(alpha=0.3)
    a2.plot(k, [r["return"] for r in rounds], marker="o", color="#d62728", label=f"{demos.get('demonstrator', 'demonstrator')}")
    if demos.get("fixed_return") is not None:
        a2.axhline(float(demos["fixed_return"]), color="#7f7f7f", ls="--", label="fixed time (same seed)")
    a2.set_xlabel("refinement round")
    a2.set_ylabel("episode return (sum over agents)")
    a2.set_xticks(k)
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    fig.suptitle("demonstration quality per round", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def intersections_figure(best: pd.DataFrame, worst: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    rows = pd.concat([best, worst.iloc[::-1]]).drop_duplicates("intersection_id")
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.3 * len(rows) + 1)))
    labels = [f"{r.intersection_id[:28]} ({str(r.street_names)[:30]})" for r in rows.itertuples()]
    vals = rows["change_s"].to_numpy(dtype=float)
    ax.barh(range(len(rows)), vals, color=["#2ca02c" if v < 0 else "#d62728" for v in vals])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("change in approach delay vs fixed time (s/vehicle; negative = better)")
    ax.set_title("per-intersection change in delay: best and worst", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------- tables
def _fmt(x: Any, nd: int = 1) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "–" if not math.isfinite(v) else f"{v:.{nd}f}"


def deployed_sentence(run: RunDir) -> str:
    """Which of the policy's rows (sampled or argmax) export and gui use, and what chose it."""
    from leed_traffic.rundir import DEPLOY

    d = run.read_json(DEPLOY) or {}
    delay, row = d.get("validation_mean_delay"), run.deployed_row
    if not delay:
        return f"Deployed (export, gui): {row}, the sampled policy as trained (no validation episodes ran)."
    seeds = ", ".join(map(str, d.get("key", {}).get("seeds", [])))
    return (f"Deployed (export, gui): {row}, chosen on training seeds {seeds} before the held-out episodes ran: "
            f"sampled {delay['sampled']:.1f} s, argmax {delay['argmax']:.1f} s mean delay.")


def comparison_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    head = ["controller", "mean delay (s/veh)", "travel time (s)", "waiting time (s)", "queue (veh)",
            "throughput (veh)", "teleports", "episodes"]
    rows = []
    for _, r in df.iterrows():
        def pm(c: str) -> str:
            s = r.get(f"{c}_std")
            return f"{_fmt(r[c])} ± {_fmt(s)}" if s is not None and c in r else _fmt(r.get(c))
        rows.append([str(r["controller"]), pm("mean_delay"), pm("mean_travel_time"), pm("mean_waiting_time"),
                     pm("mean_queue"), pm("throughput"), _fmt(r.get("teleports"), 0), _fmt(r.get("episodes"), 0)])
    return head, rows


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


# ---------------------------------------------------------------------------------- report
HTML_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.92em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f2f2f2} td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
.note{color:#555;font-size:0.9em}
h1{font-size:1.6em} h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
"""


class _Doc:
    """Builds the Markdown and the HTML side by side."""

    def __init__(self, figdir: Path, md_base: Path) -> None:
        self.md: list[str] = []
        self.html: list[str] = []
        self.figdir = figdir
        self.md_base = md_base

    def h(self, level: int, text: str) -> None:
        self.md.append(f"{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def p(self, text: str, note: bool = False) -> None:
        self.md.append(text + "\n")
        cls = ' class="note"' if note else ""
        self.html.append(f"<p{cls}>{html.escape(text)}</p>")

    def table(self, head: list[str], rows: list[list[str]]) -> None:
        self.md.append(_md_table(head, rows) + "\n")
        self.html.append(_html_table(head, rows))

    def image(self, path: Path, alt: str) -> None:
        rel = os.path.relpath(path, self.md_base)
        self.md.append(f"![{alt}]({rel})\n")
        data = base64.b64encode(path.read_bytes()).decode()
        self.html.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')


def write_report(run_dir: str | Path, *, baselines: Sequence[str | Path] | None = None,
                 per_intersection: bool = True, top: int = 10) -> tuple[Path, Path]:
    """Write ``RUN/report.md`` and ``RUN/report.html`` (figures in ``RUN/report/``); returns both paths.

    ``baselines``: IPPO (or other) run directories drawn on the learning curves; default: a
    sibling IPPO run of the same scenario if there is one. ``per_intersection=False`` skips the
    two simulations behind the per-intersection section (when no cached table exists).
    """
    run = RunDir.open(run_dir, need_policy=per_intersection)
    metrics = run.read_table(run.metrics_path)
    if metrics is None:
        raise UserError(f"{run.dir} is an incomplete training run: metrics.csv is missing or has no episode yet; "
                        "let the training finish at least one episode.")
    updates = run.read_table(run.updates_path)
    comparison = run.read_table(run.comparison_csv)
    export_cmp = run.read_table(run.export_dir / "comparison.csv")
    demos = run.read_json(f"{run.demos_dir.name}/metrics.json")
    base_runs = ([RunDir.open(b, need_policy=False) for b in baselines] if baselines is not None
                 else find_baseline_runs(run))
    scenario = run.scenario()

    figdir = run.report_dir
    figdir.mkdir(exist_ok=True)
    inter = None
    cache = figdir / INTERSECTIONS_CSV
    if cache.is_file():
        inter = run.read_table(cache)
        if inter is not None and set(inter["intersection_id"].astype(str)) != set(scenario.agents):
            inter = None
    if inter is None and per_intersection:
        inter = intersection_delays(run, scenario)
        run.write_table(cache, inter)

    doc = _Doc(figdir, run.dir)
    doc.h(1, f"{run.city}: {run.algo} traffic-signal control")
    last = metrics.iloc[-1]
    wall = float(updates["wall_time"].iloc[-1]) if updates is not None and "wall_time" in updates else float(last.get("wall_time", 0))
    doc.p(f"Run {run.dir.name}: {len(scenario.agents)} controlled intersections, {len(metrics)} training episodes, "
          f"{int(last['env_steps'])} environment steps (decisions of all agents), {wall:.0f} s of training wall time, "
          f"episodes of {run.seconds or scenario.end - scenario.begin} s simulated.")

    doc.h(2, "City map")
    change = None
    if inter is not None:
        change = dict(zip(inter["intersection_id"].astype(str), inter["change_s"].astype(float)))
    doc.image(map_figure(scenario, list(scenario.agents), figdir / "map.png", change), "city map")
    doc.p("Grey: the road network (line width grows with lanes); dots: the traffic lights the agents control"
          + (", coloured by the change in approach delay against fixed time (see the last section)." if change else "."),
          note=True)

    doc.h(2, "Learning curves")
    base_frames = [(f"{b.algo} ({b.dir.name})", m) for b in base_runs if (m := b.read_table(b.metrics_path)) is not None]
    cmp_all = comparison
    if export_cmp is not None:
        extra = export_cmp[export_cmp["controller"].astype(str).str.endswith("-plan")]
        cmp_all = extra if cmp_all is None else pd.concat([cmp_all, extra], ignore_index=True)
    doc.image(curves_figure(run, metrics, figdir / "curves.png", base_frames, cmp_all), "learning curves")
    doc.p("Per training episode (thin) and a moving average (thick). The training delay is SUMO's running mean "
          "of finished trips (timeLoss + departDelay) on training seeds; the dashed lines are held-out evaluations "
          "with every vehicle counted (never-inserted ones charged), so the two are related, not identical.",
          note=True)

    doc.h(2, "Comparison on held-out seeds")
    if comparison is not None:
        head, rows = comparison_table(comparison)
        if export_cmp is not None:
            for r in comparison_table(export_cmp)[1]:
                if r[0].endswith("-plan"):
                    rows.append(r)
        doc.table(head, rows)
        doc.p(deployed_sentence(run), note=True)
        doc.p("Mean ± standard deviation over held-out seeds (std 0 with one episode). Delay = timeLoss + "
              "departDelay per vehicle, never-inserted vehicles charged the time they waited. "
              "'-plan' rows: the exported fixed-time plan replayed by SUMO (leed-traffic export).", note=True)
    else:
        doc.p("No comparison.csv yet: train with --eval-episodes > 0 or run `leed-traffic evaluate`.", note=True)

    doc.h(2, "Demonstrations")
    if demos and demos.get("rounds"):
        doc.image(demos_figure(demos, figdir / "demos.png"), "demonstration quality")
        doc.table(["round", "validity (%)", "return", "fixed-time return", "agents ≥ fixed", "LLM calls", "cost (USD)"],
                  [[str(r["round"]), _fmt(100 * r["validity"]), _fmt(r["return"], 2), _fmt(r.get("fixed_return"), 2),
                    str(r.get("agents_beating_fixed", "")), str(r.get("calls", "")), _fmt(r.get("cost_usd", 0), 4)]
                   for r in demos["rounds"]])
        doc.p(f"Demonstrator: {demos.get('demonstrator', '?')} ({demos.get('model', '')}). Validity: share of answers "
              "that were legal phase choices; return: the demonstrator's episode return (sum over agents).", note=True)
    else:
        doc.p(f"No demonstrations in this run ({run.algo} learns without them, or RUN/demos/metrics.json is absent).",
              note=True)

    doc.h(2, "Per-intersection change in delay vs fixed time")
    if inter is not None:
        ok = inter.dropna(subset=["change_s"])
        best = ok.sort_values("change_s").head(top)
        worst = ok.sort_values("change_s", ascending=False).head(top)
        doc.image(intersections_figure(best, worst, figdir / "intersections.png"), "per-intersection change")
        head = ["intersection", "streets", "fixed (s/veh)", "policy (s/veh)", "change (s/veh)", "change (%)", "vehicles"]

        def rows_of(df: pd.DataFrame) -> list[list[str]]:
            return [[str(r.intersection_id), str(r.street_names), _fmt(r.fixed_delay_s), _fmt(r.policy_delay_s),
                     _fmt(r.change_s), _fmt(r.change_pct, 0), _fmt(r.policy_vehicles, 0)] for r in df.itertuples()]

        doc.p(f"Best {len(best)} (largest reduction):")
        doc.table(head, rows_of(best))
        doc.p(f"Worst {len(worst)}:")
        doc.table(head, rows_of(worst))
        improved = int((ok["change_s"] < 0).sum())
        doc.p(f"{improved} of {len(ok)} intersections have less approach delay than under fixed time. Approach delay: "
              "SUMO timeLoss accumulated on the intersection's incoming edges divided by the vehicles using them "
              f"(one episode per controller on held-out seed {int(inter['seed'].iloc[0])}).", note=True)
    else:
        doc.p("Skipped (per_intersection=False).", note=True)

    md_path, html_path = run.report_md, run.report_html
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(run.city)} – {html.escape(run.algo)} "
            f"report</title><style>{HTML_STYLE}</style></head><body>\n" + "\n".join(doc.html) + "\n</body></html>\n")
    atomic_write_text(md_path, "\n".join(doc.md))
    atomic_write_text(html_path, page)
    return md_path, html_path


__all__ = ["edge_delays", "intersection_delays", "write_report"]
