"""The one reader of SUMO network files (``.net.xml``): sumolib, cached, programs and connections.

Every module that needs the static network (the env's topology, the agent list, the classical
controllers' programs, the fixed-time demonstration reference) reads it here, so a network is
parsed once per process and every reader sees the same objects. The cache key is the file's
resolved path, modification time and size: a network rebuilt in place is read again.

The returned ``sumolib.net.Net`` is shared: read from it, never change it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int, size: int) -> Any:
    import sumolib

    # withConnections is sumolib's default; spelled out because topology needs it
    return sumolib.net.readNet(path, withPrograms=True, withConnections=True)


def read_net(net_file: str | os.PathLike[str]) -> Any:
    """The parsed network (``sumolib.net.Net``) with traffic-light programs and connections."""
    path = Path(net_file).resolve()
    st = path.stat()
    return _read(str(path), st.st_mtime_ns, st.st_size)


def first_program(net: Any, tls_id: str) -> Any | None:
    """The traffic light's program with the lowest programID, or None if it has none.

    netconvert (OSM cities) and the RESCO networks give every light exactly one program ("0"),
    which is also the one SUMO runs for fixed time; with several programs SUMO would run the last
    one loaded, so the readers here would describe a different program than ``fixed`` runs.
    """
    programs = net.getTLS(tls_id).getPrograms()
    return programs[sorted(programs)[0]] if programs else None


def tls_programs(net_file: str | os.PathLike[str]) -> Iterator[tuple[str, Any]]:
    """``(tls_id, first_program)`` for every traffic light that has a program, in network order."""
    net = read_net(net_file)
    for tls in net.getTrafficLights():
        program = first_program(net, tls.getID())
        if program is not None:
            yield tls.getID(), program


def program_states(net: Any, tls_id: str) -> list[str]:
    """Signal state strings of the light's first program, in program order."""
    return [p.state for p in first_program(net, tls_id).getPhases()]
