"""How the tests wait for something to happen: polling it, ending the moment it has happened.

The timeouts only bound a failure, so they are sized for a busy machine, not an idle one: a CI runner or
a laptop that builds Pi images under qemu beside the suite runs everything several times slower, and a
readiness wait sized for an idle machine turned whole modules into errors there. Each figure in the
tests is what an idle machine needs with some room; ``scaled`` multiplies it by PATIENCE
(``WHEELWRIGHT_TEST_PATIENCE``, default 5). A passing run waits no longer for it.
"""

from __future__ import annotations

import os
import time

PATIENCE = float(os.environ.get("WHEELWRIGHT_TEST_PATIENCE", "5"))


def scaled(seconds: float) -> float:
    """``seconds`` (enough on an idle machine) as a bound on a busy one."""
    return seconds * PATIENCE


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5, on_timeout=None):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` s
    (an idle machine's figure: scaled for a busy one)."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            raise TimeoutError(f"timed out after {scaled(timeout):.0f} s waiting for {what}\n{detail}")
        time.sleep(interval)
