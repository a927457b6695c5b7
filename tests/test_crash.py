"""A sync killed at the worst moments loses nothing and doubles nothing."""

import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from support.catalog import schema_keys
from wheelwright.catalog.bulk import replay
from wheelwright.catalog import status
from wheelwright.catalog.events import parse_row
from wheelwright.catalog.fold import fold_log
from wheelwright.testing.pypi_double import PyPIDouble

ROWS = [[f"pkg{i % 7}", f"1.{i}", 1000 + i, "new release", 10 + i] for i in range(40)] + \
       [["pkg3", None, 5000, "remove project", 100], ["Pkg3", None, 6000, "create", 101]]


# `wheelwright sync --once`, with any backlog replayed in bulk (indexes dropped, events kept in memory,
# or past `memory` events on disk).
BULK_SYNC = ("import sys; from wheelwright.operate import cli; from wheelwright.catalog import sync; sync.BULK_BACKLOG = 1; sync.REPLAY_MEMORY = {}; "
             "sys.exit(cli.main(['sync', '--once']))")


def run_sync(settings, double, *, bulk=False, memory=10**6, **popen):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHEELWRIGHT")}
    env.update(WHEELWRIGHT_DSN=settings.dsn, WHEELWRIGHT_HOME=str(settings.home),
               WHEELWRIGHT_PYPI_URL=double.xmlrpc_url)
    command = ["-c", BULK_SYNC.format(int(memory))] if bulk else ["-m", "wheelwright", "sync", "--once"]
    return subprocess.Popen([sys.executable, *command], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def wait_until_blocked(conn, timeout=30.0):
    """Wait until a wheelwright backend waits on a lock we hold."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'wheelwright' "
                           "AND wait_event_type = 'Lock'").fetchone()
        if row:
            return row[0]
        time.sleep(0.05)
    raise AssertionError("the sync never reached the lock")


def kill_and_release(proc, holder, blocked_pid):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # The server has not noticed yet that its client died; end that backend before letting go.
    holder.execute("SELECT pg_terminate_backend(%s)", (blocked_pid,))
    holder.rollback()


def expected(rows):
    return sorted((p, s.present, sorted(s.versions)) for p, s in fold_log(parse_row(r) for r in rows).items())


def catalog_state(conn):
    packages = conn.execute("SELECT package, present FROM packages ORDER BY package").fetchall()
    return [(p, present, [v for (v,) in conn.execute(
        "SELECT version FROM versions WHERE package = %s ORDER BY version", (p,))])
        for p, present in packages]


@pytest.fixture
def double():
    with PyPIDouble(ROWS, page_size=10) as pypi:
        yield pypi


def test_killed_between_fetching_and_committing_a_page(settings, double):
    with psycopg.connect(settings.dsn) as holder, psycopg.connect(settings.dsn, autocommit=True) as check:
        holder.execute("SELECT * FROM sync_state FOR UPDATE")  # the watermark update will wait here
        proc = run_sync(settings, double)
        blocked = wait_until_blocked(check)
        # The page's events are inserted in the sync's open transaction, not yet committed.
        kill_and_release(proc, holder, blocked)
        assert check.execute("SELECT count(*) FROM journal").fetchone()[0] == 0
        assert check.execute("SELECT last_serial FROM sync_state").fetchone()[0] == 0

        finished = run_sync(settings, double)
        assert finished.wait(timeout=120) == 0, finished.stderr.read().decode()
        serials = [s for (s,) in check.execute("SELECT serial FROM journal ORDER BY serial")]
        assert serials == sorted(r[4] for r in ROWS), "every serial exactly once"
        assert catalog_state(check) == expected(ROWS)


def waiting_to_fold(conn) -> int:
    return status.read_status(conn).pending_packages


# "bulk, spilled": the replay keeps all but 5 of its events on disk.
@pytest.mark.parametrize("bulk, memory", [(False, 0), (True, 10**6), (True, 5)],
                         ids=["incremental", "bulk", "bulk, spilled"])
def test_killed_while_folding(settings, double, bulk, memory):
    with psycopg.connect(settings.dsn) as holder, psycopg.connect(settings.dsn, autocommit=True) as check:
        keys = schema_keys(check)
        holder.execute("LOCK TABLE packages IN ACCESS EXCLUSIVE MODE")  # derive will wait here
        proc = run_sync(settings, double, bulk=bulk, memory=memory)
        blocked = wait_until_blocked(check)
        kill_and_release(proc, holder, blocked)
        left = list(settings.replay_dir.glob(replay.SPILL_PREFIX + "*"))
        assert len(left) == (memory == 5), "a replay killed outright leaves the events it spilled, in its home"
        assert replay.remove_abandoned(settings.replay_dir) == left, "and they are known for abandoned"
        # Pages were committed with their watermark; the fold died, and the derived mark with it.
        assert check.execute("SELECT last_serial, derived_serial FROM sync_state").fetchone() == (101, 0)
        assert waiting_to_fold(check) == 7
        assert check.execute("SELECT count(*) FROM packages").fetchone()[0] == 0

        finished = run_sync(settings, double)
        assert finished.wait(timeout=120) == 0, finished.stderr.read().decode()
        assert check.execute("SELECT count(*) FROM journal").fetchone()[0] == len(ROWS)
        assert catalog_state(check) == expected(ROWS)
        assert check.execute("SELECT derived_serial FROM sync_state").fetchone()[0] == 101
        assert waiting_to_fold(check) == 0
        assert schema_keys(check) == keys, "a replay's dropped indexes are back"
