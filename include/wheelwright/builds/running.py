"""The builds running on this worker right now, so that an operator can stop one (piw-monitor's kill).

A build that hangs, or that the operator must stop for another reason (the Pi is needed, the release
was taken down), should end now, not at its timeout hours later, and end as what it is: stopped by the
operator, not a failure of the release to retry later. The build runs in a sandbox whose first process
leads a session of its own (bwrap with ``--new-session``, ``--die-with-parent``, its own pid
namespace): killing that session ends everything the build started. This room owns finding it:

- the builder registers each build as its sandbox starts (:class:`Running`): the session leader's pid
  and its start time (a pid alone could be reused once the build ended), the release and target, in
  ``running/<build_id>.json`` of its builds folder (``$WHEELWRIGHT_HOME/builds`` on a worker); the
  entry goes when the build ends;
- :func:`stop`, run by the worker's own Celery process when the operator asks
  (:mod:`wheelwright.builds.worker_control`), writes a stop mark beside the entry, saying who, and then
  kills the session with SIGKILL;
- the builder, finding the mark once its sandbox ended, reports the build as stopped by the operator:
  a final failure, never a transient one (the index host records who stopped it, too).

Only this worker's own processes write here; the files hold no secret and nothing the build can reach
(the sandbox sees none of ``WHEELWRIGHT_HOME``). Standard library only: the worker's Celery process
imports this at start-up.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

FOLDER = "running"
_STOP = ".stop"


def running_folder(builds: str | os.PathLike) -> Path:
    """Where the builds run in ``builds`` (a builder's ``workdir_root``) are registered."""
    return Path(builds) / FOLDER


def worker_folder() -> Path:
    """The registry of this worker's builds: those the build_wheels tasks run, in
    ``$WHEELWRIGHT_HOME/builds`` (:func:`wheelwright.operate.dag_tasks.build_and_send`)."""
    from wheelwright.config import Settings
    return running_folder(Settings.from_env().home / "builds")


class Running:
    """One build while its sandbox runs: ``with Running(request, folder) as r: ... on_start=r.started``."""

    def __init__(self, request, folder: str | os.PathLike):
        self.build_id = int(request["build_id"])
        self.facts = {"build_id": self.build_id, "package": str(request.get("package")),
                      "version": str(request.get("version")), "target": str(request.get("target"))}
        self.folder = Path(folder)
        self.entry = self.folder / f"{self.build_id}.json"
        self.mark = self.folder / f"{self.build_id}{_STOP}"

    def __enter__(self) -> "Running":
        self.mark.unlink(missing_ok=True)  # a retried task starts afresh
        return self

    def started(self, pid: int) -> None:
        """The sandbox's session leader is ``pid``: from now on an operator can stop it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.entry.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.facts, "pid": pid, "start_time": process_start_time(pid),
                                   "since": time.time()}))
        os.replace(tmp, self.entry)

    def stopped_by(self) -> str | None:
        """Who stopped this build (its stop mark), or None if nobody did."""
        try:
            return self.mark.read_text(errors="replace").strip()[:200] or "an operator"
        except FileNotFoundError:
            return None

    def __exit__(self, *exc_info) -> None:
        self.entry.unlink(missing_ok=True)
        self.mark.unlink(missing_ok=True)


def entries(folder: str | os.PathLike) -> list[dict]:
    """The builds registered in ``folder`` whose session is still alive, oldest first."""
    found = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            pid, build_id = int(entry["pid"]), int(entry["build_id"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if entry.get("start_time") is None or process_start_time(pid) != entry["start_time"]:
            continue  # ended without removing its entry (the worker was killed): not running
        found.append({k: entry.get(k) for k in ("build_id", "package", "version", "target", "since")}
                     | {"build_id": build_id})
    return sorted(found, key=lambda e: (e.get("since") or 0, e["build_id"]))


def stop(folder: str | os.PathLike, by: str, build_id: int | None = None) -> list[int]:
    """Stop the builds registered in ``folder`` (or only ``build_id``), as ``by``; the ids stopped."""
    by = " ".join(str(by or "").split())[:200] or "an operator"
    folder = Path(folder)
    stopped = []
    for entry in entries(folder):
        if build_id is not None and entry["build_id"] != build_id:
            continue
        path = folder / f"{entry['build_id']}.json"
        try:
            facts = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        (folder / f"{entry['build_id']}{_STOP}").write_text(by + "\n")
        pid = int(facts["pid"])
        if process_start_time(pid) != facts.get("start_time"):
            continue  # it ended meanwhile
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError) as exc:
            log.warning("could not stop build %s (session %d): %s", entry["build_id"], pid, exc)
            continue
        log.warning("build %s of %s==%s stopped by %s", entry["build_id"], entry["package"],
                    entry["version"], by)
        stopped.append(entry["build_id"])
    return stopped


def process_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (``/proc/<pid>/stat``, field 22), or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()   # after "pid (comm) ": comm may hold spaces
    return fields[19].decode() if len(fields) > 19 else None
