"""The dashboard as operators use it: the real Airflow API server with our plugin, a real browser.

An ``airflow api-server`` runs with the repository's plugins folder, the SimpleAuthManager with two
users (admin and viewer, passwords from a file, "all admins" off) and a catalog holding a day of
activity (tests/support/dashboard_world.py). The tests ask the mounted app over HTTP with and without
tokens, act as each user, and open the page in headless Chromium both on its own and inside the
Airflow UI (the navigation entry's frame, signed in by the UI's ``_token`` cookie). Screenshots are
saved in the test's folder (and copied to $WHEELWRIGHT_ARTEFACTS when set).
"""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from support.airflow_processes import (AirflowStack, airflow_variables, create_database, drop_database, free_port,
                                       migrate, wait_until)
from support.browser import Browser
from support.catalog import database_dsn
from support.dashboard_world import EXPECTED, PI, build_world
from wheelwright.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PASSWORDS = {"admin": "admin-secret", "viewer": "viewer-secret"}


@dataclass
class Site:
    stack: AirflowStack
    base: str
    catalog_dsn: str
    folder: Path
    tokens: dict


def request(url: str, *, method="GET", token=None, body=None, content_type="application/json",
            cookie=None) -> tuple[int, bytes]:
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = f"_token={cookie}"
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def site(tmp_path_factory, pg_server, catalog_template):
    root = tmp_path_factory.mktemp("dashboard-ui")
    workdir = root / "run"
    workdir.mkdir()
    cleanup, stack = [], None
    try:
        catalog_name = f"wheelwright_dashboard_{free_port()}"
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{catalog_name}" TEMPLATE "{catalog_template}"')
        cleanup.append(lambda: drop_database(pg_server, catalog_name))
        catalog_dsn = database_dsn(pg_server, catalog_name)
        output = root / "www"
        with psycopg.connect(catalog_dsn, autocommit=True) as conn:
            build_world(conn, output, root / "access.log")
        dbname, metadata_dsn = create_database(pg_server)
        cleanup.append(lambda: drop_database(pg_server, dbname))
        passwords = root / "passwords.json"
        passwords.write_text(json.dumps(PASSWORDS))
        api_port = free_port()
        settings = Settings(home=root / "home", dsn=catalog_dsn, pypi_url="http://127.0.0.1:9/pypi", output=output)
        env = airflow_variables(settings, airflow_home=root / "airflow", metadata_dsn=metadata_dsn,
                                dags_folder=root / "dags", api_port=api_port, executor="LocalExecutor")
        (root / "dags").mkdir()
        env.update({
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        })
        stack = AirflowStack(env=env, workdir=workdir, api_port=api_port)
        migrate(env, workdir)
        process = stack.start("api-server", "api-server", "--port", str(api_port), "--host", "127.0.0.1")
        base = f"http://127.0.0.1:{api_port}"

        def up():
            stack._check_alive(process)
            try:
                return request(f"{base}/api/v2/version")[0] in (200, 401)
            except OSError:
                return False
        wait_until(up, 120, "the api-server to answer", interval=1, on_timeout=process.tail)
        tokens = {}
        for user, password in PASSWORDS.items():
            status, raw = request(f"{base}/auth/token", method="POST",
                                  body={"username": user, "password": password})
            assert status == 201, raw
            tokens[user] = json.loads(raw)["access_token"]
        yield Site(stack, base, catalog_dsn, root, tokens)
    finally:
        if stack is not None:
            stack.stop()
        for undo in reversed(cleanup):
            undo()


READS = ["/wheelwright/", "/wheelwright/api/snapshot"]
ACTIONS = [("/wheelwright/api/targets/cp311-armv7l/pause", {"reason": "test"}),
           ("/wheelwright/api/packages/backlog/skip", {"reason": "test"}),
           ("/wheelwright/api/packages/backlog/rebuild", {}),
           ("/wheelwright/api/packages/backlog/settings", {"timeout": "6h"})]


def test_the_plugin_is_in_the_ui_navigation(site):
    status, raw = request(f"{site.base}/api/v2/plugins", token=site.tokens["admin"])
    assert status == 200, raw
    plugin = next(p for p in json.loads(raw)["plugins"] if p["name"] == "wheelwright")
    view = plugin["external_views"][0]
    assert (view["destination"], view["url_route"], view["href"]) == ("nav", "wheelwright", "/wheelwright/")


def test_every_route_refuses_a_request_without_a_token(site):
    for path in READS + [path for path, _ in ACTIONS] + ["/wheelwright/logs/0000/0000/0001.txt.gz"]:
        method = "POST" if "/api/" in path and "snapshot" not in path else "GET"
        status, _ = request(site.base + path, method=method, body={} if method == "POST" else None)
        assert status == 401, f"{method} {path} answered {status} without a token"


def test_a_bad_token_is_forbidden(site):
    for path in READS:
        assert request(site.base + path, token="not.a.jwt")[0] == 403, path


def test_a_viewer_reads_but_may_not_act(site):
    for path in READS:
        assert request(site.base + path, token=site.tokens["viewer"])[0] == 200, path
    for path, body in ACTIONS:
        status, _ = request(site.base + path, method="POST", token=site.tokens["viewer"], body=body)
        assert status == 403, f"a viewer got {status} from {path}"
    with psycopg.connect(site.catalog_dsn) as conn:
        assert not conn.execute("SELECT paused FROM targets WHERE name = %s", (PI,)).fetchone()[0]


def test_an_admin_pauses_and_resumes_a_target(site):
    admin = site.tokens["admin"]
    status, raw = request(f"{site.base}/wheelwright/api/targets/{PI}/pause", method="POST", token=admin,
                          body={"reason": "new SD cards"})
    assert status == 200, raw
    with psycopg.connect(site.catalog_dsn) as conn:
        assert conn.execute("SELECT paused, paused_by, paused_reason FROM targets WHERE name = %s",
                            (PI,)).fetchone() == (True, "admin", "new SD cards")
    assert request(f"{site.base}/wheelwright/api/targets/{PI}/resume", method="POST", token=admin,
                   body={})[0] == 200
    assert request(f"{site.base}/wheelwright/api/targets/nope/pause", method="POST", token=admin,
                   body={})[0] == 404


def test_actions_take_json_only_and_check_names(site):
    admin = site.tokens["admin"]
    status, _ = request(f"{site.base}/wheelwright/api/targets/{PI}/pause", method="POST", token=admin,
                        body=b"reason=csrf", content_type="application/x-www-form-urlencoded")
    assert status == 415
    assert request(f"{site.base}/wheelwright/api/packages/..%2Fetc/skip", method="POST", token=admin,
                   body={"reason": "x"})[0] in (404, 422)
    status, raw = request(f"{site.base}/wheelwright/api/packages/backlog/skip", method="POST", token=admin,
                          body={"reason": "from the dashboard", "version": "1.0"})
    assert status == 200, raw
    with psycopg.connect(site.catalog_dsn) as conn:
        assert conn.execute("SELECT skip_reason FROM versions WHERE package = 'backlog' AND version = '1.0'"
                            ).fetchone()[0] == "from the dashboard (admin)"
    assert request(f"{site.base}/wheelwright/api/packages/backlog/unskip", method="POST", token=admin,
                   body={"version": "1.0"})[0] == 200


def test_an_admin_sets_a_package_s_build_settings_and_the_sandbox_s_variables_are_refused(site):
    admin = site.tokens["admin"]
    status, raw = request(f"{site.base}/wheelwright/api/packages/Backlog/settings", method="POST", token=admin,
                          body={"apt": ["libcups2-dev"], "timeout": "6h", "env": {"MAX_JOBS": "1"}})
    assert status == 200, raw
    assert json.loads(raw)["settings"] == {"apt": ["libcups2-dev"], "timeout": 21600.0, "env": {"MAX_JOBS": "1"}}
    with psycopg.connect(site.catalog_dsn) as conn:
        assert conn.execute("SELECT changed_by FROM build_settings WHERE package = 'backlog'").fetchone() == ("admin",)
    status, raw = request(f"{site.base}/wheelwright/api/packages/backlog/settings", method="POST", token=admin,
                          body={"env": {"LD_PRELOAD": "/x.so"}})
    assert status == 422 and b"LD_PRELOAD belongs to the build sandbox" in raw
    assert request(f"{site.base}/wheelwright/api/packages/backlog/settings", method="POST", token=admin,
                   body={"clear": True})[0] == 200


def test_a_failed_builds_log_opens_from_the_page(site):
    snapshot = json.loads(request(f"{site.base}/wheelwright/api/snapshot", token=site.tokens["viewer"])[1])
    log_path = snapshot["failures"][0]["log_path"]
    status, raw = request(f"{site.base}/wheelwright/{log_path}", token=site.tokens["viewer"])
    assert status == 200 and b"libxml/parser.h" in gzip.decompress(raw)   # urllib keeps the encoding
    assert request(f"{site.base}/wheelwright/logs/../../etc/passwd", token=site.tokens["viewer"])[0] == 404


def test_a_builders_last_doctor_result_is_shown_to_a_viewer(site, tmp_path):
    from wheelwright.operate import doctor, doctor_reports
    finding = doctor.Finding("emulation:armhf", "armhf binaries run here", "FAIL", "arch-test is not installed",
                             "apt-get install arch-test", "builder")
    report = doctor_reports.make_report("celery@pi", [finding], ["builder"])
    (tmp_path / "pi-kitchen").mkdir()                  # what the builder account pi-kitchen sent
    (tmp_path / "pi-kitchen" / "doctor-celery@pi.json").write_text(json.dumps(report))
    with psycopg.connect(site.catalog_dsn, autocommit=True) as conn:
        doctor_reports.record(conn, tmp_path)   # what the builder_health DAG does with what arrived
    try:
        status, raw = request(f"{site.base}/wheelwright/", token=site.tokens["viewer"])
        html = raw.decode()
        assert status == 200 and 'data-doctor="pi-kitchen/celery@pi"' in html
        assert "FAIL armhf binaries run here: arch-test is not installed" in html and "apt-get install arch-test" in html
        snapshot = json.loads(request(f"{site.base}/wheelwright/api/snapshot", token=site.tokens["viewer"])[1])
        [row] = snapshot["doctor"]
        assert (row["builder"], row["ok"], row["failing"][0]["fix"]) == ("pi-kitchen/celery@pi", False,
                                                                        "apt-get install arch-test")
    finally:
        with psycopg.connect(site.catalog_dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM builder_doctor")


def test_the_page_in_a_browser_shows_the_catalogs_numbers(site):
    browser = Browser()
    try:
        browser.set_cookie(site.base, "_token", site.tokens["viewer"])
        browser.goto(f"{site.base}/wheelwright/")
        values = browser.evaluate("""Object.fromEntries([...document.querySelectorAll('.card')].map(
            c => [c.id, c.querySelector('.value').textContent.trim()]))""")
        assert values["card-serial"] == f"{EXPECTED['serial']:,}"
        assert values["card-lag"] == f"{EXPECTED['lag']:,}"
        assert values["card-events"] == str(EXPECTED["events_last_hour"])
        assert values["card-builds-hour"] == str(EXPECTED["builds_last_hour"])
        assert values["card-published"] == str(EXPECTED["wheels"])
        depths = browser.evaluate("""Object.fromEntries([...document.querySelectorAll('#targets tr[data-target]')]
            .map(r => [r.dataset.target, r.querySelector('.queue-depth').textContent.trim()]))""")
        assert depths == {k: str(v) for k, v in EXPECTED["queue"].items()}
        assert browser.evaluate("document.querySelectorAll('svg.chart').length") == 6
        assert browser.evaluate("document.querySelectorAll('button').length") == 0, "a viewer gets no buttons"
        browser.screenshot(site.folder / "dashboard-viewer.png")
    finally:
        browser.close()


def wait_or_screenshot(browser, shot, *args, **kwargs):
    try:
        return browser.wait_for(*args, **kwargs)
    except TimeoutError:
        browser.screenshot(shot, full_page=False)
        raise AssertionError(f"{kwargs.get('what')}: see {shot}; the page says "
                             f"{browser.evaluate('document.body.innerText')[:500]!r}") from None


def test_the_page_opens_inside_the_airflow_ui_signed_in_by_its_cookie(site):
    browser = Browser()
    try:
        browser.set_cookie(site.base, "_token", site.tokens["admin"])
        browser.goto(f"{site.base}/plugin/wheelwright")
        text = wait_or_screenshot(browser, site.folder / "dashboard-in-airflow-ui-failed.png", """(() => { const f = document.querySelector('iframe');
            const d = f && f.contentDocument; return d && d.body && d.body.textContent.includes('Catalog serial')
            ? d.body.textContent : ''; })()""", timeout=90, what="the dashboard inside the UI's frame")
        assert f"{EXPECTED['serial']:,}" in text and "signed in as admin" in text
        assert browser.evaluate("document.querySelector('iframe').contentDocument"
                                ".querySelectorAll('button').length") > 0, "an admin gets the action buttons"
        browser.screenshot(site.folder / "dashboard-in-airflow-ui.png", full_page=False)
    finally:
        browser.close()
