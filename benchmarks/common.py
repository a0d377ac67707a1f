"""Shared helpers for the benchmark scripts: machine description, versions, docs sections.

Benchmarks write their tables into ``docs/benchmarks.md``, each into its own ``## <title>``
section, so that every script can regenerate its part without touching the others.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
def _cache_dir() -> Path:
    from leed_traffic.paths import cache_dir

    return cache_dir() / "benchmarks"


CACHE_DIR = _cache_dir()
"""Built benchmark inputs (synthetic grids, demonstrations): in the user cache, not the source tree."""
DOCS_DIR = REPO_ROOT / "docs"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info(packages: tuple[str, ...] = ("leed-traffic", "eclipse-sumo", "libsumo", "sumo-rl", "numpy")) -> dict[str, str]:
    info = {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cores (nproc)": str(os.cpu_count()),
        "cpu": cpu_model(),
        "memory": _mem_total(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "git": git_revision(),
    }
    info |= {p: package_version(p) for p in packages}
    try:
        load = os.getloadavg()
        info["load average at start"] = " ".join(f"{x:.2f}" for x in load)
    except OSError:
        pass
    return info


def _mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def command_line() -> str:
    args = " ".join(_quote(a) for a in sys.argv[1:])
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO_ROOT)
    except ValueError:
        pass
    return f"python {script} {args}".strip()


def _quote(a: str) -> str:
    return a if re.fullmatch(r"[\w./,:=+-]+", a) else "'" + a.replace("'", "'\\''") + "'"


def load_average() -> str:
    """The 1, 5 and 15 min load averages as a section quotes them ("0.14 0.03 0.01")."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median(xs) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def markdown_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_section(doc: Path, title: str, body: str, doc_title: str = "# Benchmarks") -> None:
    """Replace (or append) the ``## title`` section of ``doc`` with ``body``; other sections stay."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else f"{doc_title}\n\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    tmp = doc.with_suffix(doc.suffix + ".tmp")
    tmp.write_text(text.rstrip() + "\n")
    tmp.replace(doc)


RESULT_TAG = "BENCH_RESULT "
"""Prefix of the one JSON line a benchmark worker subprocess prints as its result."""


def print_result(res: dict) -> None:
    """Worker side of ``run_result``: print the result line."""
    import json

    print(RESULT_TAG + json.dumps(res), flush=True)


def run_result(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> dict:
    """Run a worker subprocess and return its result dict with ``status`` ("ok", or why not)."""
    import json

    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return {"status": "ok", **json.loads(line[len(RESULT_TAG):])}
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": f"failed (exit {proc.returncode}): {tail[:300]}"}



def benchmark_config(city: str, *, eval_episodes: int, seconds: int | None = None, reward: str | None = None,
                     observation: str | None = None, enforce_max_green: bool = False, rounds: int = 2,
                     workers: int = 1, seed: int = 0, settings: dict | None = None):
    """The ExperimentConfig of one benchmark run: the one place that turns benchmark flags into the
    pipeline's settings. Benchmarks keep sumo-rl's phase rule (no max green) unless asked, evaluate
    only the policy (classical controllers are measured once per city) and write no report.
    ``settings`` are further ``SECTION.FIELD`` values (ablation variants)."""
    from leed_traffic.config import ExperimentConfig

    cfg = ExperimentConfig()
    cfg.scenario.city = city
    cfg.env.seconds = seconds
    cfg.env.enforce_max_green = bool(enforce_max_green)
    if reward:
        cfg.env.reward = reward
    if observation:
        cfg.env.observation = observation
        if observation != "phase":  # another observation: per-intersection networks (the phase policy reads only its own)
            cfg.train.policy = "mlp"
    cfg.demos.rounds = rounds
    cfg.train.seed, cfg.train.n_workers, cfg.train.progress = seed, workers, False
    cfg.eval.episodes, cfg.eval.report = eval_episodes, False
    for key, value in (settings or {}).items():
        cfg.set(key, value, source="benchmark settings")
    return cfg
