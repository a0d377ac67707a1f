"""Watching a city: sumo-gui with the trained policy (or an exported plan) at the lights.

- ``gui(city, run=None, plan=None)``: opens sumo-gui on the city (needs a display). With ``run``
  the trained policy controls the signals live through TraCI (the same environment and options
  it was trained with); with ``plan`` SUMO runs the exported fixed-time plans; with neither the
  network's own programs.
- ``snapshot(city, run=None, time=T, out=FILE.png, size=(W, H))``: the same, headless: sumo-gui
  under a private Xvfb server, advanced to ``T`` seconds after the episode begin, fitted to the
  network's boundary in the "real world" scheme, saved with TraCI ``gui.screenshot``; the PNG is
  scaled to exactly ``size`` if sumo-gui's canvas differs.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time as _time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from leed_traffic.errors import UserError

log = logging.getLogger(__name__)

VIEW = "View #0"
SCHEME = "real world"
CHROME_PX = 110
"""Height of sumo-gui's menu, tool and status bars: the window is made this much taller than the picture."""


def _scenario_and_controller(city: str | None, run: str | Path | None, plan: str | Path | None):
    """(scenario, env options, policy controller or None)."""
    from leed_traffic.controllers import get_controller
    from leed_traffic.export import PlanController
    from leed_traffic.rundir import RunDir
    from leed_traffic.scenario import build_scenario, scenario_with_hash

    if run is not None and plan is not None:
        raise UserError("Pass either --run (live policy) or --plan (exported plan), not both.")
    opts: dict[str, Any] = {}
    policy = None
    if run is not None:
        info = RunDir.open(run)
        scenario = info.scenario()
        if city and info.city != city and Path(city).name.split(".")[0] != scenario.city:
            raise UserError(f"{info.dir} was trained on {info.city}, not {city}; pass --city {info.city}.")
        policy = get_controller("policy", run=info.path)
        opts.update(info.env_options)
    else:
        if not city:
            raise UserError("Pass --city (or --run, which knows its city).")
        if plan is not None:
            ctrl = PlanController.from_path(plan)
            scenario = scenario_with_hash(city, ctrl.scenario_hash, f"The plan {ctrl.plans} was exported for")
            opts.update(ctrl.prepare(scenario, Path(tempfile.gettempdir()), 0))
        else:
            scenario = build_scenario(city)
            opts["control"] = False
    return scenario, opts, policy


def _make_env(scenario, opts: dict[str, Any], seconds: int | None, seed: int, sumo_args: tuple[str, ...] = ()):
    from leed_traffic.env import EnvConfig, LeedTrafficEnv

    return LeedTrafficEnv(scenario, EnvConfig(use_gui=True, seconds=seconds, seed=seed,
                                              sumo_args=tuple(sumo_args), **opts))


def gui(city: str | None, run: str | Path | None = None, plan: str | Path | None = None,
        seconds: int | None = None, delay_ms: int = 0) -> None:
    """Open sumo-gui with the trained policy live (``run``), an exported plan (``plan``), or neither."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        where = f"--city {city}" if city else "--city CITY"
        raise UserError(f"No display is available (DISPLAY is not set), so sumo-gui cannot open; render a "
                        f"picture instead with `leed-traffic snapshot {where} --out FILE.png`.")
    scenario, opts, policy = _scenario_and_controller(city, run, plan)
    env = _make_env(scenario, opts, seconds, scenario.eval_seeds[0], ("--delay", str(delay_ms)))
    try:
        obs, _ = env.reset()
        if policy is not None:
            while env.agents:
                obs, *_ = env.step(policy.act(env, obs))
        else:
            env.run_to_end()
    except Exception as exc:  # noqa: BLE001 - closing the window ends the TraCI connection
        if type(exc).__name__ not in ("FatalTraCIError", "TraCIException"):
            raise
        log.info("sumo-gui closed: %s", exc)
    finally:
        env.close()


# ---------------------------------------------------------------------------------- headless
@contextmanager
def virtual_display(width: int = 1920, height: int = 1080) -> Iterator[str]:
    """Start a private Xvfb server and yield its DISPLAY (``:N``); stopped on exit."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise UserError("Xvfb is not installed, so sumo-gui cannot render headlessly; run `make system-deps` "
                        "(it installs xvfb).")
    r, w = os.pipe()
    proc = subprocess.Popen([xvfb, "-displayfd", str(w), "-screen", "0", f"{width}x{height}x24",
                             "-nolisten", "tcp", "-noreset"], pass_fds=(w,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(w)
    try:
        buf = b""
        deadline = _time.time() + 20
        while not buf.endswith(b"\n") and _time.time() < deadline:
            chunk = os.read(r, 16)
            if not chunk:
                break
            buf += chunk
        if not buf.strip():
            err = proc.stderr.read().decode(errors="replace")[-300:] if proc.poll() is not None else ""
            raise RuntimeError(f"Xvfb did not start ({err.strip() or 'no display number reported'})")
        yield f":{int(buf.strip())}"
    finally:
        os.close(r)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _display_env(display: str) -> Iterator[None]:
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old


def snapshot(city: str | None, run: str | Path | None = None, time: float = 300.0, out: str | Path = "snapshot.png",
             size: tuple[int, int] = (1280, 800), plan: str | Path | None = None,
             boundary: tuple[float, float, float, float] | None = None, use_display: bool = False) -> Path:
    """Render the city in sumo-gui at ``time`` seconds after the episode begin to a PNG of ``size``.

    Headless under a private Xvfb (``use_display=True`` uses the current DISPLAY instead). With
    ``run`` the trained policy drives the lights up to ``time``; with ``plan`` the exported plans.
    ``boundary`` (xmin, ymin, xmax, ymax in network metres) zooms; default: the whole network.
    """
    out = Path(out)
    w, h = (int(v) for v in size)
    if w < 64 or h < 64 or w > 7680 or h > 4320:
        raise UserError(f"--size {w}x{h} is out of range; use 64x64 to 7680x4320 pixels.")
    if time < 0:
        raise UserError(f"--time must be >= 0 seconds (got {time}).")
    scenario, opts, policy = _scenario_and_controller(city, run, plan)
    length = scenario.end - scenario.begin
    if time > length:
        raise UserError(f"--time {time:g} s is past the end of the {length} s episode of {scenario.city}.")
    delta = opts.get("delta_time") or scenario.delta_time
    seconds = int(min(length, time + 2 * delta + 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ("--window-size", f"{w},{h + CHROME_PX}", "--window-pos", "0,0", "--delay", "0")
    with (_null() if use_display else virtual_display(max(w + 200, 1280), max(h + 300, 1024))) as display:
        with (_null() if display is None else _display_env(display)):
            env = _make_env(scenario, opts, seconds, scenario.eval_seeds[0], args)
            try:
                obs, _ = env.reset()
                target = scenario.begin + float(time)
                if policy is not None:
                    while env.agents and env.sim_time + env.config.delta_time <= target:
                        obs, *_ = env.step(policy.act(env, obs))
                if env.sim_time < target:
                    env.sim.simulationStep(target)
                    env.sim_time = float(env.sim.simulation.getTime())
                _shoot(env, out, w, h, boundary)
            finally:
                env.close()
    _fit_png(out, (w, h))
    return out


@contextmanager
def _null() -> Iterator[None]:
    yield None


def _shoot(env, out: Path, w: int, h: int, boundary) -> None:
    gui = env.sim.gui
    view = gui.getIDList()[0] if gui.getIDList() else VIEW
    try:
        gui.setSchema(view, SCHEME)
    except Exception as exc:  # noqa: BLE001 - an older sumo-gui without the scheme keeps its default
        log.info("scheme %r not available: %s", SCHEME, exc)
    if boundary is None:
        from leed_traffic.netfile import read_net

        boundary = tuple(read_net(str(env.scenario.net_file)).getBoundary())
    gui.setBoundary(view, *boundary)
    env.sim.simulationStep()  # let the view lay out before the final fit
    gui.setBoundary(view, *boundary)
    from leed_traffic.fileio import atomic_write

    def screenshot(tmp: Path) -> None:  # tmp keeps the .png suffix: sumo-gui picks the format from it
        # at the canvas size: an explicit width/height renders with the canvas' viewport (off-centre)
        gui.screenshot(view, str(tmp.resolve()))
        env.sim.simulationStep()  # sumo-gui writes the screenshot at the end of the next step
        deadline = _time.time() + 20
        written = lambda: tmp.exists() and tmp.stat().st_size > 0  # noqa: E731 - atomic_write created it empty
        while not written() and _time.time() < deadline:
            _time.sleep(0.1)
        if not written():
            raise RuntimeError(f"sumo-gui wrote no screenshot to {tmp}")
        _time.sleep(0.2)  # let the writer finish

    atomic_write(out, screenshot)


def _fit_png(path: Path, size: tuple[int, int]) -> None:
    """Make the PNG exactly ``size``, atomically: sumo-gui's canvas is scaled to fit (aspect kept)
    and centred on the background colour (the corner pixel)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        im = im.convert("RGB")
    if im.size == size:
        return
    scale = min(size[0] / im.width, size[1] / im.height)
    inner = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
    fitted = Image.new("RGB", size, im.getpixel((im.width - 1, 0)))
    fitted.paste(inner, ((size[0] - inner.width) // 2, (size[1] - inner.height) // 2))
    from leed_traffic.fileio import atomic_write

    atomic_write(path, lambda tmp: fitted.save(tmp, "PNG"))


__all__ = ["gui", "snapshot", "virtual_display"]
