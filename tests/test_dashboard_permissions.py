"""Who may read the dashboard and who may act from it, under a real per-DAG auth manager.

An ``airflow api-server`` runs with our plugin and Airflow's FAB auth manager (``apache-airflow-providers-
fab``: roles that grant read or edit on single DAGs, as operators of a shared Airflow give them). Its
users, each with a role of its own:

- ``admin``: read and edit on every DAG;
- ``builds``: read on every DAG the page shows, edit on ``build_wheels`` (what the actions change);
- ``other``: read on every DAG the page shows, edit on ``pypi_sync`` only: it must not act, whatever it
  puts in the query string (Airflow's ``requires_access_dag`` would take ``?dag_id=pypi_sync`` from it);
- ``one``: read on ``pypi_sync`` only: it must not even read the page.

Each is asked through the API server with a token from FAB's own ``/auth/token``, and the catalog is
read afterwards to show nothing was changed by a refused request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import psycopg
import pytest

from support.airflow_processes import (AirflowStack, airflow_variables, create_database, drop_database, free_port,
                                       migrate, wait_until)
from support.catalog import database_dsn
from support.dashboard_world import PI, build_world
from test_dashboard_ui import request
from wheelwright.config import Settings
from wheelwright.operate.dashboard_app import ACTS_ON, SHOWN_DAGS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
EVERY_DAG = "DAGs"          # FAB's resource for all DAGs at once; "DAG:<id>" for one
ROLES = {
    "admin": [("can_read", EVERY_DAG), ("can_edit", EVERY_DAG)],
    "builds": [("can_read", f"DAG:{d}") for d in SHOWN_DAGS] + [("can_edit", "DAG:build_wheels")],
    "other": [("can_read", f"DAG:{d}") for d in SHOWN_DAGS] + [("can_edit", "DAG:pypi_sync")],
    "one": [("can_read", "DAG:pypi_sync")],
}
PASSWORD = "a-long-enough-password"

ACTIONS = [(f"/wheelwright/api/targets/{PI}/pause", {"reason": "test"}),
           (f"/wheelwright/api/targets/{PI}/resume", {}),
           ("/wheelwright/api/packages/backlog/skip", {"reason": "test"}),
           ("/wheelwright/api/packages/backlog/unskip", {}),
           ("/wheelwright/api/packages/numpy/rebuild", {"version": "2.1.0"})]
READS = ["/wheelwright/", "/wheelwright/api/snapshot"]
SNEAKY_QUERIES = ["", "?dag_id=pypi_sync", "?dag_id=build_wheels", "?dag_id=~"]

# Run inside the API server's environment: FAB's own security manager makes the roles and users.
MAKE_USERS = textwrap.dedent("""
    import json, sys
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
    roles, password = json.loads(sys.argv[1]), sys.argv[2]
    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        for name, permissions in roles.items():
            role = sm.add_role(name)
            for action, resource in permissions:
                sm.add_permission_to_role(role, sm.create_permission(action, resource))
            assert sm.add_user(name, name, "test", f"{name}@example.org", role, password), name
""")


def catalog_state(dsn: str) -> tuple:
    with psycopg.connect(dsn) as conn:
        return (conn.execute("SELECT name, paused FROM targets ORDER BY name").fetchall(),
                conn.execute("SELECT package, skip_reason FROM packages WHERE skip_reason IS NOT NULL").fetchall(),
                conn.execute("SELECT package, version, skip_reason FROM versions WHERE skip_reason IS NOT NULL").fetchall(),
                conn.execute("SELECT count(*) FROM builds").fetchone())


@pytest.fixture(scope="module")
def site(tmp_path_factory, pg_server, catalog_template):
    root = tmp_path_factory.mktemp("dashboard-fab")
    workdir = root / "run"
    workdir.mkdir()
    cleanup, stack = [], None
    try:
        catalog_name = f"wheelwright_dashboard_fab_{free_port()}"
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{catalog_name}" TEMPLATE "{catalog_template}"')
        cleanup.append(lambda: drop_database(pg_server, catalog_name))
        catalog_dsn = database_dsn(pg_server, catalog_name)
        with psycopg.connect(catalog_dsn, autocommit=True) as conn:
            build_world(conn, root / "www", root / "access.log")
        dbname, metadata_dsn = create_database(pg_server)
        cleanup.append(lambda: drop_database(pg_server, dbname))
        api_port = free_port()
        settings = Settings(home=root / "home", dsn=catalog_dsn, pypi_url="http://127.0.0.1:9/pypi",
                            output=root / "www")
        env = airflow_variables(settings, airflow_home=root / "airflow", metadata_dsn=metadata_dsn,
                                dags_folder=root / "dags", api_port=api_port, executor="LocalExecutor")
        (root / "dags").mkdir()
        env["AIRFLOW__CORE__AUTH_MANAGER"] = FAB
        stack = AirflowStack(env=env, workdir=workdir, api_port=api_port)
        migrate(env, workdir)   # FAB's tables too: the provider brings its own migrations
        made = subprocess.run([sys.executable, "-c", MAKE_USERS, json.dumps(ROLES), PASSWORD], env=env,
                              cwd=workdir, capture_output=True, text=True, timeout=180)
        assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-3000:]
        process = stack.start("api-server", "api-server", "--port", str(api_port), "--host", "127.0.0.1")
        base = f"http://127.0.0.1:{api_port}"

        def up():
            stack._check_alive(process)
            try:
                return request(f"{base}/api/v2/version")[0] in (200, 401, 403)
            except OSError:
                return False
        wait_until(up, 120, "the api-server to answer", interval=1, on_timeout=process.tail)
        tokens = {}
        for user in ROLES:
            status, raw = request(f"{base}/auth/token", method="POST", body={"username": user, "password": PASSWORD})
            assert status == 201, (user, raw)
            tokens[user] = json.loads(raw)["access_token"]
        yield type("Site", (), {"base": base, "catalog_dsn": catalog_dsn, "tokens": tokens, "stack": stack})
    finally:
        if stack is not None:
            stack.stop()
        for undo in reversed(cleanup):
            undo()


def test_the_dashboard_names_dags_that_exist():
    import ast
    from pathlib import Path
    ids = set()
    for file in (Path(__file__).parents[1] / "dags").glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.FunctionDef):
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "dag":
                        named = [k.value.value for k in deco.keywords if k.arg == "dag_id"]
                        ids.add(named[0] if named else node.name)
    assert set(SHOWN_DAGS) <= ids and set(ACTS_ON) <= ids, f"DAGs in dags/: {sorted(ids)}"


def test_a_user_who_may_edit_only_another_dag_is_refused_every_action_whatever_the_query(site):
    before = catalog_state(site.catalog_dsn)
    for path, body in ACTIONS:
        for query in SNEAKY_QUERIES:
            status, raw = request(site.base + path + query, method="POST", token=site.tokens["other"], body=body)
            assert status == 403, f"{path}{query}: a user who may edit only pypi_sync got {status} {raw[:200]!r}"
    assert catalog_state(site.catalog_dsn) == before, "a refused request changed the catalog"


def test_a_user_who_may_edit_build_wheels_acts_and_the_query_changes_nothing(site):
    token = site.tokens["builds"]
    status, raw = request(f"{site.base}/wheelwright/api/targets/{PI}/pause?dag_id=pypi_sync", method="POST",
                          token=token, body={"reason": "new SD cards"})
    assert status == 200, raw
    with psycopg.connect(site.catalog_dsn) as conn:
        assert conn.execute("SELECT paused, paused_by FROM targets WHERE name = %s", (PI,)).fetchone() == \
            (True, "builds")
    assert request(f"{site.base}/wheelwright/api/targets/{PI}/resume", method="POST", token=token,
                   body={})[0] == 200
    assert request(f"{site.base}/wheelwright/api/packages/backlog/skip", method="POST", token=site.tokens["admin"],
                   body={"reason": "an admin may too"})[0] == 200
    assert request(f"{site.base}/wheelwright/api/packages/backlog/unskip", method="POST", token=token,
                   body={})[0] == 200


def test_reading_needs_read_access_to_every_dag_the_page_shows(site):
    for path in READS:
        for query in SNEAKY_QUERIES:
            status, _ = request(site.base + path + query, token=site.tokens["one"])
            assert status == 403, f"{path}{query}: a user who may read only pypi_sync got {status}"
        for user in ("other", "builds", "admin"):
            assert request(site.base + path, token=site.tokens[user])[0] == 200, (user, path)
    assert request(f"{site.base}/wheelwright/logs/0000/0000/0001.txt.gz", token=site.tokens["one"])[0] == 403


def test_a_build_log_is_served_as_inert_text(site):
    import urllib.request
    snapshot = json.loads(request(f"{site.base}/wheelwright/api/snapshot", token=site.tokens["builds"])[1])
    req = urllib.request.Request(f"{site.base}/wheelwright/{snapshot['failures'][0]['log_path']}",
                                 headers={"Authorization": f"Bearer {site.tokens['builds']}"})
    with urllib.request.urlopen(req, timeout=60) as response:
        headers = response.headers
    assert headers["Content-Type"].startswith("text/plain")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in headers["Content-Security-Policy"], "a log written by a build must never run as a page"


def test_the_page_offers_actions_only_to_who_may_take_them(site):
    page = request(f"{site.base}/wheelwright/?dag_id=pypi_sync", token=site.tokens["other"])[1].decode()
    assert "<button" not in page and "read only" in page
    page = request(f"{site.base}/wheelwright/", token=site.tokens["builds"])[1].decode()
    assert "<button" in page


def test_an_action_sent_from_another_origin_is_refused(site):
    before = catalog_state(site.catalog_dsn)
    for fetched_from in ("cross-site", "same-site"):
        status = _post_with(site, f"/wheelwright/api/targets/{PI}/pause", {"Sec-Fetch-Site": fetched_from})
        assert status == 403, f"Sec-Fetch-Site: {fetched_from} got {status}"
    assert catalog_state(site.catalog_dsn) == before
    assert _post_with(site, f"/wheelwright/api/targets/{PI}/resume", {"Sec-Fetch-Site": "same-origin"}) == 200


def _post_with(site, path: str, headers: dict) -> int:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(site.base + path, method="POST", data=b"{}", headers={
        "Authorization": f"Bearer {site.tokens['admin']}", "Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
