"""Bundled city definitions, importable as ``leed_traffic.data.scenarios`` so an installed wheel
carries them (see pyproject.toml and ``leed_traffic.paths``). No code lives here."""
