"""User-facing errors.

A ``UserError`` is bad input the user can fix (unknown city, missing file, no traffic lights...).
The CLI prints its one-sentence message and exits non-zero without a traceback; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: the message says what is wrong and what to do."""


class ScenarioError(UserError):
    """The city, OSM file, bounding box or demand cannot make a usable scenario."""


class DemonstrationError(UserError, ValueError):
    """A demonstration dataset that cannot be used here (missing, another format, another network)."""
