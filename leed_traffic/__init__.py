"""leed-traffic: traffic-signal control for real cities, from OpenStreetMap to exported signal plans.

Data flows one way: OSM extract -> network and demand (scenario) -> environment ->
demonstrations -> learning -> evaluation -> exported plans and report.
"""

from leed_traffic import sumo_env as _sumo_env  # sets SUMO_HOME before sumo-rl/sumolib imports

__version__ = "0.1.0"

__all__ = ["make_env", "__version__"]


def make_env(city: str, **options):  # noqa: ANN201 - re-exported lazily to keep import light
    """Build (if needed) the city's scenario and return its PettingZoo ParallelEnv."""
    from leed_traffic.env import make_env as _make_env

    return _make_env(city, **options)
