"""A new target's history enters its queue only by backfill, one interval at a time, after fresh work.

The story of a new Debian release: the catalog holds releases spread over years, all built by the
target of the installation. A new target is added; its queue starts with what is uploaded from then
on. The operator backfills ``rebuild_history`` over a few months: each run admits exactly the
releases first uploaded in its month, for the named target only, and running a month again admits
nothing. The new target then builds fresh releases before any of the history.

The DAG runs for real under ``dag.test()`` (Airflow's own data intervals from its timetable), in a
subprocess with a migrated metadata database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from support.build_world import add_build, add_release, use_targets
from support.catalog import REPO
from wheelwright.builds import queue

OLD = "cp311-x86_64"        # the installation's target: it has built the whole history
NEW = "cp313-x86_64"        # the new Python of the new Debian release
EARLIER = "cp39-x86_64"     # a target added later that comes earlier in ABI order

FIRST = f"""
[[target]]
name = "{OLD}"
abi = "cp311"
platform = "linux_x86_64"
distro = "bookworm"
"""
SECOND = FIRST + f"""
[[target]]
name = "{NEW}"
abi = "cp313"
platform = "linux_x86_64"
distro = "trixie"
"""
THIRD = SECOND + f"""
[[target]]
name = "{EARLIER}"
abi = "cp39"
platform = "linux_x86_64"
distro = "bullseye"
"""


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


# Releases spread over years; the months backfilled below are March, April and May 2019.
HISTORY = {
    ("aardvark", "1.0"): utc(2018, 12, 31, 23, 59),   # the month before: never admitted below
    ("badger", "1.0"): utc(2019, 3, 1),                # an interval's start is inside it ...
    ("badger", "1.1"): utc(2019, 3, 31, 23, 59),
    ("cobra", "2.0"): utc(2019, 4, 1),                 # ... its end is the next one's start
    ("cobra", "2.1"): utc(2019, 4, 15),
    ("dingo", "0.1"): utc(2019, 5, 20),
    ("eel", "3.0"): utc(2019, 6, 1),                   # the month after
    ("ferret", "1.0"): utc(2023, 7, 4),
}
MONTHS = {"2019-03": ["badger==1.0", "badger==1.1"], "2019-04": ["cobra==2.0", "cobra==2.1"],
          "2019-05": ["dingo==0.1"]}


@pytest.fixture
def history(catalog):
    """The installation's target has tried every old release (binary wheels or failures: each moves
    on to the next target); then the new target is added."""
    use_targets(catalog, FIRST)
    for (package, version), released in HISTORY.items():
        add_release(catalog, package, version, released=released)
        add_build(catalog, package, version, OLD, "failure")
    use_targets(catalog, SECOND)
    enabled_yesterday(catalog, NEW)
    return catalog


def enabled_yesterday(conn, target: str) -> None:
    conn.execute("UPDATE targets SET enabled_at = now() - interval '1 day' WHERE name = %s", (target,))
    conn.commit()


def names(requests) -> list[str]:
    return [f"{r['package']}=={r['version']}" for r in requests]


def backfilled(conn, target=None) -> list[str]:
    rows = conn.execute("SELECT target, package || '==' || version FROM build_backfill "
                        "ORDER BY released, package, version").fetchall()
    conn.commit()
    return [name for t, name in rows if target is None or t == target]


def test_a_new_target_starts_with_what_is_uploaded_after_it_was_enabled(history):
    assert queue.queue_head(history, NEW) == [], "no history is in line for a new target"
    add_release(history, "gecko", "1.0", age=timedelta(minutes=0))
    add_build(history, "gecko", "1.0", OLD, "failure")
    assert queue.queue_head(history, NEW) == [("gecko", "1.0")]


def test_a_new_installation_builds_the_whole_catalog(catalog):
    add_release(catalog, "old", "1.0", released=utc(2010, 1, 1))
    use_targets(catalog, FIRST)
    assert queue.queue_head(catalog, OLD) == [("old", "1.0")]


def test_admitting_an_interval_queues_its_releases_once_for_that_target_only(history):
    march = queue.admit_history(history, NEW, utc(2019, 3, 1), utc(2019, 4, 1))
    assert (march.releases, march.already_built, march.admitted) == (2, 0, 2)
    assert backfilled(history) == MONTHS["2019-03"]
    again = queue.admit_history(history, NEW, utc(2019, 3, 1), utc(2019, 4, 1))
    assert again.admitted == 0, "re-running an interval queues nothing twice"
    old = queue.admit_history(history, OLD, utc(2019, 3, 1), utc(2019, 4, 1))
    assert (old.releases, old.admitted) == (0, 0), "the old target's whole history is its queue already"
    assert backfilled(history, OLD) == []


def test_fresh_releases_are_claimed_before_backfilled_history(history):
    queue.admit_history(history, NEW, utc(2019, 3, 1), utc(2019, 6, 1))
    for package, age in (("gecko", timedelta(minutes=5)), ("heron", timedelta(hours=3))):
        add_release(history, package, "1.0", age=age)
        add_build(history, package, "1.0", OLD, "failure")
    assert names(queue.claim_wave(history, NEW, 3)) == ["gecko==1.0", "heron==1.0", "dingo==0.1"]
    assert names(queue.claim_wave(history, NEW, 10)) == ["cobra==2.1", "cobra==2.0", "badger==1.1",
                                                          "badger==1.0"]
    assert queue.claim_wave(history, NEW, 10) == []


def test_a_lost_backfilled_build_is_claimed_again_and_a_finished_one_leaves_the_table(history):
    queue.admit_history(history, NEW, utc(2019, 5, 1), utc(2019, 6, 1))
    (request,) = queue.claim_wave(history, NEW, 10)
    assert queue.mark_lost(history, request["build_id"], "its worker vanished")
    (again,) = queue.claim_wave(history, NEW, 10)
    assert names([again]) == ["dingo==0.1"]
    history.execute("UPDATE builds SET status = 'success' WHERE build_id = %s", (again["build_id"],))
    history.commit()
    assert queue.prune_history(history) == 1
    assert backfilled(history) == []


def test_a_new_earlier_target_holds_back_only_what_is_in_its_own_scope(catalog):
    """Added after the others, cp39 comes first in ABI order: fresh releases wait for it, but the
    history it was never asked to build does not wait for it forever."""
    use_targets(catalog, SECOND)
    add_release(catalog, "ancient", "1.0", released=utc(2015, 1, 1))
    use_targets(catalog, THIRD)
    enabled_yesterday(catalog, EARLIER)
    add_release(catalog, "brandnew", "1.0", age=timedelta(minutes=1))
    assert queue.queue_head(catalog, OLD) == [("ancient", "1.0")], \
        "the new first target holds back its fresh work only"
    assert queue.queue_head(catalog, EARLIER) == [("brandnew", "1.0")]


RUN_INTERVALS = textwrap.dedent("""
    import json, sys
    from datetime import datetime, timezone
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("rebuild_history")
    results = []
    for month_end in json.loads(sys.argv[2]):
        run = dag.test(logical_date=datetime.fromisoformat(month_end).replace(tzinfo=timezone.utc),
                       run_conf={"target": sys.argv[3]})
        (ti,) = [ti for ti in run.get_task_instances() if ti.task_id == "admit_history"]
        results.append({"state": str(run.state), "start": run.data_interval_start.isoformat(),
                        "end": run.data_interval_end.isoformat(), "ti": str(ti.state)})
    print(json.dumps(results))
""")


def run_intervals(airflow_env, settings, targets_file, month_ends: list[str], target: str) -> list[dict]:
    env = dict(airflow_env, WHEELWRIGHT_DSN=settings.dsn, WHEELWRIGHT_TARGETS=str(targets_file))
    result = subprocess.run([sys.executable, "-c", RUN_INTERVALS, str(REPO / "dags"), json.dumps(month_ends),
                             target], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def admitted_per_run(airflow_env) -> list[list[dict]]:
    metadata = airflow_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2", "postgresql")
    with psycopg.connect(metadata) as meta:
        rows = meta.execute("SELECT x.value FROM xcom x JOIN dag_run r ON r.id = x.dag_run_id "
                            "WHERE x.dag_id = 'rebuild_history' AND x.task_id = 'admit_history' "
                            "ORDER BY x.timestamp").fetchall()
    return [value if isinstance(value, list) else json.loads(value) for (value,) in rows]


def test_a_backfill_of_rebuild_history_admits_each_month_once(history, airflow_env, settings, tmp_path):
    targets_file = tmp_path / "targets.toml"
    targets_file.write_text(SECOND)
    runs = run_intervals(airflow_env, settings, targets_file, ["2019-04-01", "2019-05-01", "2019-06-01"], NEW)
    assert [(r["state"], r["ti"]) for r in runs] == [("success", "success")] * 3
    assert [(r["start"][:10], r["end"][:10]) for r in runs] == [
        ("2019-03-01", "2019-04-01"), ("2019-04-01", "2019-05-01"), ("2019-05-01", "2019-06-01")], \
        "each run's data interval is one month of uploads"
    assert backfilled(history, NEW) == MONTHS["2019-03"] + MONTHS["2019-04"] + MONTHS["2019-05"]
    assert backfilled(history, OLD) == []

    again = run_intervals(airflow_env, settings, targets_file, ["2019-05-01"], NEW)
    assert again[0]["state"] == "success"
    counts = [[(s["target"], s["releases"], s["admitted"]) for s in run] for run in admitted_per_run(airflow_env)]
    # (dag.test replaced April's first run by the second; the other months' runs stay)
    assert counts[-3:] == [[(NEW, 2, 2)], [(NEW, 1, 1)], [(NEW, 2, 0)]], \
        "the grid shows per interval how many releases it held and admitted; April again admits none"
    assert backfilled(history, NEW) == MONTHS["2019-03"] + MONTHS["2019-04"] + MONTHS["2019-05"]

    add_release(history, "gecko", "1.0", age=timedelta(minutes=1))
    add_build(history, "gecko", "1.0", OLD, "failure")
    assert names(queue.claim_wave(history, NEW, 2)) == ["gecko==1.0", "dingo==0.1"]
