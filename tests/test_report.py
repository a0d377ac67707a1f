"""Report on a tiny real run: Markdown + self-contained HTML with every section and picture."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from leed_traffic.errors import UserError


@pytest.fixture(scope="module")
def run_with_results(tmp_path_factory) -> Path:
    from test_export import SECONDS, make_tiny_run

    from leed_traffic.controllers import get_controller
    from leed_traffic.evaluate import evaluate, summarize

    run = make_tiny_run(tmp_path_factory.mktemp("runs") / "melbourne-ippo")
    df = evaluate("melbourne", [get_controller("fixed"), get_controller("policy", run=run)], episodes=1,
                  seconds=SECONDS, out=run / "evaluation", progress=False)
    summarize(df).to_csv(run / "comparison.csv", index=False)
    (run / "demos").mkdir()
    (run / "demos" / "metrics.json").write_text(json.dumps({
        "demonstrator": "max-pressure", "model": "rule:max-pressure", "is_llm": False, "fixed_return": -1.5,
        "rounds": [{"round": 1, "validity": 0.9, "return": -1.2, "fixed_return": -1.5, "agents_beating_fixed": 20},
                   {"round": 2, "validity": 1.0, "return": -0.8, "fixed_return": -1.5, "agents_beating_fixed": 30}]}))
    return run


def test_report_sections_and_self_contained_html(run_with_results):
    from PIL import Image

    from leed_traffic.report import write_report

    md, page = write_report(run_with_results)
    text, html = md.read_text(), page.read_text()
    for section in ("City map", "Learning curves", "Comparison on held-out seeds", "Demonstrations",
                    "Per-intersection change in delay vs fixed time"):
        assert f"## {section}" in text and section in html
    # comparison table: mean ± std per controller
    assert re.search(r"\| fixed \| \d+\.\d ± \d+\.\d \|", text) and re.search(r"\| ippo \| \d+\.\d ± ", text)
    # demonstrations per round
    assert "| 1 | 90.0 |" in text and "| 2 | 100.0 |" in text
    # self-contained: every picture embedded, nothing fetched
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert "http://" not in html and "https://" not in html
    # markdown pictures exist and decode
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        with Image.open(md.parent / rel) as im:
            assert im.width > 300 and im.height > 200
    # per-intersection delays: every agent measured, best/worst tables capped at ten rows
    inter = pd.read_csv(run_with_results / "report" / "intersections.csv")
    assert len(inter) == 41 and inter["fixed_delay_s"].notna().sum() > 10
    assert (inter["fixed_vehicles"] >= 0).all()
    best = text.split("Best ")[1].split("Worst ")[0]
    assert 1 <= best.count("\n| ") - 1 <= 10


def test_report_refuses_incomplete_runs(tmp_path):
    from leed_traffic.report import write_report

    with pytest.raises(UserError, match="does not exist"):
        write_report(tmp_path / "nope")
    (tmp_path / "r").mkdir()
    with pytest.raises(UserError, match="config.json"):
        write_report(tmp_path / "r")


def test_edge_delays_parses_sumo_edgedata(tmp_path):
    from leed_traffic.report import edge_delays

    f = tmp_path / "e.xml"
    f.write_text('<meandata><interval begin="0" end="60"><edge id="a" timeLoss="30.5" entered="3" departed="1"/>'
                 '<edge id="b" sampledSeconds="0"/></interval></meandata>')
    assert edge_delays(f) == {"a": (30.5, 4.0), "b": (0.0, 0.0)}
