"""Bundled data as package data (see ``leed_traffic.paths``): ``networks`` and ``scenarios`` map to
the top-level folders of the source tree, so a wheel carries them; read them via ``paths``."""
