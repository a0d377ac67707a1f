"""Bundled OSM extracts, importable as ``leed_traffic.data.networks`` so an installed wheel carries
them (see pyproject.toml and ``leed_traffic.paths``). No code lives here."""
