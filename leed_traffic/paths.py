"""Where leed-traffic reads its bundled data and writes its caches: the one place that knows.

Nothing is written under the package or the source tree, so a non-editable ``pip install .``
works and a checkout stays clean. Built networks, scenarios and the LLM answer cache live in the
user cache directory (``~/.cache/leed-traffic`` on Linux); the environment variable
``LEED_TRAFFIC_CACHE`` overrides it and is read at every call, so tests and CI can redirect it.
Training runs are not caches: they go where the user says (``--out``, default ``./runs``).

The bundled OSM extracts (top-level ``networks/osm/``) and city definitions (top-level
``scenarios/*.toml``) are package data: pyproject.toml maps them to ``leed_traffic.data.networks``
and ``leed_traffic.data.scenarios``, so an editable install reads the checkout's folders and a
wheel carries copies.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

CACHE_ENV = "LEED_TRAFFIC_CACHE"
APP_NAME = "leed-traffic"


def cache_dir() -> Path:
    """Root of every cache (``$LEED_TRAFFIC_CACHE`` if set, else the platform's user cache dir)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def networks_build_dir() -> Path:
    """Converted SUMO networks, one ``<city>-<hash>/`` folder per extract and conversion options."""
    return cache_dir() / "networks"


def downloads_dir() -> Path:
    """OSM extracts downloaded with osmnx for ``place:`` cities (kept: a download is slow)."""
    return networks_build_dir() / "downloads"


def scenarios_build_dir() -> Path:
    """Built scenarios (routes + scenario.json), one ``<city>-<hash>/`` folder each."""
    return cache_dir() / "scenarios"


def answer_cache_path() -> Path:
    """The LLM answer cache shared by every run (keys include backend, model, prompt version)."""
    return cache_dir() / "llm" / "answers.sqlite"


def _data_dir(package: str) -> Path:
    # regular packages on the file system: files() is a real Path (netconvert and osmium need one)
    try:
        return Path(str(resources.files(package)))
    except ModuleNotFoundError:
        # a checkout imported without being installed (PYTHONPATH=.), or installed before the
        # data packages existed: read the source tree's folder (read only)
        folder = Path(__file__).resolve().parent.parent / package.rsplit(".", 1)[-1]
        if folder.is_dir():
            return folder
        raise


def bundled_osm_dir() -> Path:
    """The bundled OSM extracts (``networks/osm/`` of the source tree)."""
    return _data_dir("leed_traffic.data.networks") / "osm"


def bundled_networks_readme() -> Path:
    """Licence and provenance of the bundled extracts (``networks/README.md``)."""
    return _data_dir("leed_traffic.data.networks") / "README.md"


def bundled_scenarios_dir() -> Path:
    """The bundled city definitions (``scenarios/*.toml`` of the source tree)."""
    return _data_dir("leed_traffic.data.scenarios")
