"""Locate SUMO from the ``eclipse-sumo`` wheel.

sumo-rl refuses to import without ``SUMO_HOME`` and SUMO's Python tools (randomTrips,
tlsCycleAdaptation) live under it, so we set it once, before anything imports them.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def sumo_home() -> Path:
    """Return SUMO_HOME, setting it from the eclipse-sumo wheel when unset."""
    home = os.environ.get("SUMO_HOME")
    if home and Path(home, "bin").is_dir():
        return Path(home)
    import sumo  # the eclipse-sumo wheel

    home = str(sumo.SUMO_HOME)
    os.environ["SUMO_HOME"] = home
    return Path(home)


def sumo_binary(name: str) -> str:
    """Absolute path of a SUMO executable (``sumo``, ``netconvert``, ``sumo-gui``, ...)."""
    candidate = sumo_home() / "bin" / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"SUMO executable {name!r} not found; run `make setup`.")
    return found


def sumo_tool(*parts: str) -> Path:
    """Path of a script under ``$SUMO_HOME/tools``."""
    path = sumo_home().joinpath("tools", *parts)
    if not path.exists():
        raise FileNotFoundError(f"SUMO tool {path} is missing; run `make setup`.")
    return path


def python_exe() -> str:
    return sys.executable


sumo_home()
