"""sumo-gui: no display -> one sentence pointing to snapshot; headless snapshots are real PNGs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from leed_traffic.errors import UserError

needs_xvfb = pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb missing: run `make system-deps`")


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"), dtype=float)


def test_gui_without_display_points_to_snapshot(monkeypatch):
    from leed_traffic.viz import gui

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(UserError) as e:
        gui("melbourne")
    msg = str(e.value)
    assert "snapshot" in msg and "DISPLAY" in msg and msg.count(". ") == 0  # one sentence


def test_snapshot_rejects_bad_arguments(tmp_path):
    from leed_traffic.viz import snapshot

    with pytest.raises(UserError, match="size"):
        snapshot("melbourne", out=tmp_path / "x.png", size=(10, 10))
    with pytest.raises(UserError, match="not both"):
        snapshot("melbourne", run=tmp_path, plan=tmp_path, out=tmp_path / "x.png")


@needs_xvfb
def test_snapshot_city_png(tmp_path, monkeypatch, melbourne):
    from leed_traffic.viz import snapshot

    monkeypatch.delenv("DISPLAY", raising=False)  # must work headless
    out = snapshot("melbourne", time=30, out=tmp_path / "city.png", size=(480, 360))
    px = _png(out)
    assert px.shape == (360, 480, 3)
    assert px.std() > 10  # not a blank frame: roads on the background
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 20


@needs_xvfb
def test_snapshot_with_trained_policy(tmp_path, monkeypatch):
    from test_export import make_tiny_run

    from leed_traffic.viz import snapshot

    run = make_tiny_run(tmp_path / "run")
    monkeypatch.delenv("DISPLAY", raising=False)
    out = snapshot(None, run=run, time=40, out=tmp_path / "policy.png", size=(400, 300),
                   boundary=(600, 500, 1000, 800))
    px = _png(out)
    assert px.shape == (300, 400, 3) and px.std() > 10
    assert not list(tmp_path.glob(".*.png"))  # temporary screenshots are gone
