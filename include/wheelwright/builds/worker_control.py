"""What an operator may tell a builder's Celery worker directly: which builds run, and stop the current one.

A builder holds no password of the catalog and runs anybody's code, so the index host does not reach
into it: it asks through the broker the worker already listens to, with Celery's remote control (the
same channel as Celery's own ``cancel_consumer``, which puts a worker to sleep). This module adds two
commands to the worker's control panel when the worker imports it at start-up (Airflow's Celery
configuration names it: :mod:`wheelwright.operate.celery_config`):

- ``wheelwright_running`` (inspect): the builds running on this worker now, from
  :mod:`wheelwright.builds.running`;
- ``wheelwright_stop_build`` (control): stop them (or one build id), saying who asked; the reply lists
  the build ids stopped. Each one ends as "stopped by the operator" (see :mod:`running`).

Commands take nothing a build could use: a name to record and an optional build id.
"""

from __future__ import annotations

from celery.worker.control import control_command, inspect_command

from wheelwright.builds import running


@inspect_command()
def wheelwright_running(state, **_):
    """The builds running on this worker."""
    return {"running": running.entries(running.worker_folder())}


@control_command(args=[("by", str), ("build_id", int)], signature="<by> [build_id]")
def wheelwright_stop_build(state, by: str = "an operator", build_id: int | None = None, **_):
    """Stop the build(s) running on this worker, as ``by``."""
    return {"ok": "stopped", "stopped": running.stop(running.worker_folder(), by, build_id)}
