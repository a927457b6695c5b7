"""The machine's programs the tests run, and how a test asks for them.

Every program named here is installed by `make setup` (the Makefile's SYSTEM_PACKAGES), so a test that
finds one missing fails, with the command that brings it: a skip would let a new machine, or a CI
runner, pass without ever running what it is there to check.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require(*programs: str) -> None:
    """Fail the calling test unless every one of ``programs`` (a command on PATH or an absolute path)
    is on this machine."""
    missing = [p for p in programs
               if not (os.path.exists(p) if p.startswith("/") else shutil.which(p))]
    if missing:
        pytest.fail(f"{', '.join(missing)} is missing on this machine: `make setup` installs it "
                    f"(`wheelwright doctor` says what else is)", pytrace=False)
