"""Files that ship inside the package: the catalog's SQL, the default targets and reference data.

They live at the top of the repository (``sql/``, ``data/``) where people look for them, and
``pyproject.toml`` maps them into the package as ``wheelwright.sql`` and ``wheelwright.data``, so an
installed wheelwright (a Pi worker's plain ``pip install``) finds them as an editable checkout does:
through ``importlib.resources``, never through a path relative to this file.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable


def sql(name: str) -> Traversable:
    """``sql/<name>``: a migration, or ``queries/<query>.sql``."""
    return files("wheelwright.sql").joinpath(name)


def sql_folder() -> Traversable:
    return files("wheelwright.sql")


def data(name: str) -> Traversable:
    """``data/<name>``: the default targets, Pi OS Lite's package lists, the missing-files map."""
    return files("wheelwright.data").joinpath(name)
