"""The dashboard's takedown and import actions, through the real API server with logins, and in a browser.

An ``airflow api-server`` with our plugin and the SimpleAuthManager (an admin, a viewer; "all admins"
off) over a catalog with two targets and a few releases. The routes refuse a request without a token
(401) and a viewer (403), take JSON (takedowns) or the wheel itself as ``application/octet-stream``
(imports: a cross-site form can send neither), and do what the command line does. Then an admin opens
the page in Chromium, takes a project down and uploads a wheel through the page's own controls.
(Sleep, wake and stop-build through the same API server, with a broker and workers: test_builder_control.py.)
"""

from __future__ import annotations

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
from support.build_world import TWO_TARGETS, add_release, use_targets
from support.catalog import database_dsn
from support.received import wheel_of
from wheelwright.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PASSWORDS = {"admin": "admin-secret", "viewer": "viewer-secret"}


@dataclass
class Site:
    base: str
    catalog_dsn: str
    output: Path
    folder: Path
    tokens: dict


@pytest.fixture(scope="module")
def site(tmp_path_factory, pg_server, catalog_template):
    root = tmp_path_factory.mktemp("operator-ui")
    workdir = root / "run"
    workdir.mkdir()
    cleanup, stack = [], None
    try:
        catalog_name = f"wheelwright_operator_ui_{free_port()}"
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{catalog_name}" TEMPLATE "{catalog_template}"')
        cleanup.append(lambda: drop_database(pg_server, catalog_name))
        catalog_dsn = database_dsn(pg_server, catalog_name)
        with psycopg.connect(catalog_dsn, autocommit=True) as conn:
            use_targets(conn)
            for package in ("gizmo", "purepkg", "uploaded"):
                add_release(conn, package, "1.0")
        targets = root / "targets.toml"
        targets.write_text(TWO_TARGETS)
        dbname, metadata_dsn = create_database(pg_server)
        cleanup.append(lambda: drop_database(pg_server, dbname))
        passwords = root / "passwords.json"
        passwords.write_text(json.dumps(PASSWORDS))
        api_port = free_port()
        output = root / "www"
        settings = Settings(home=root / "home", dsn=catalog_dsn, pypi_url="http://127.0.0.1:9/pypi", output=output)
        (root / "dags").mkdir()
        env = airflow_variables(settings, airflow_home=root / "airflow", metadata_dsn=metadata_dsn,
                                dags_folder=root / "dags", api_port=api_port, executor="LocalExecutor")
        env.update({
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "WHEELWRIGHT_TARGETS": str(targets),
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
            status, raw = request(f"{base}/auth/token", method="POST", body={"username": user, "password": password})
            assert status == 201, raw
            tokens[user] = json.loads(raw)["access_token"]
        yield Site(base, catalog_dsn, output, root, tokens)
    finally:
        if stack is not None:
            stack.stop()
        for undo in reversed(cleanup):
            undo()


def request(url: str, *, method="GET", token=None, body=None, content_type="application/json"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = content_type
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, data=data, headers=headers),
                                    timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_takedown_and_its_restore_need_edit_rights_and_record_who(site):
    url = f"{site.base}/wheelwright/api/packages/gizmo/remove"
    assert request(url, method="POST", body={"reason": "x"})[0] == 401
    assert request(url, method="POST", token=site.tokens["viewer"], body={"reason": "x"})[0] == 403
    assert request(url, method="POST", token=site.tokens["admin"], body=b"reason=csrf",
                   content_type="application/x-www-form-urlencoded")[0] == 415
    assert request(url, method="POST", token=site.tokens["admin"], body={})[0] == 422, "a reason is required"
    status, raw = request(url, method="POST", token=site.tokens["admin"], body={"reason": "licence forbids binaries"})
    assert status == 200, raw
    with psycopg.connect(site.catalog_dsn) as conn:
        assert conn.execute("SELECT reason, removed_by FROM takedowns WHERE package = 'gizmo'").fetchone() == \
            ("licence forbids binaries", "admin")
    snapshot = json.loads(request(f"{site.base}/wheelwright/api/snapshot", token=site.tokens["viewer"])[1])
    assert [t["package"] for t in snapshot["operator"]["takedowns"]] == ["gizmo"]
    assert request(f"{site.base}/wheelwright/api/packages/no-such-thing/remove", method="POST",
                   token=site.tokens["admin"], body={"reason": "x"})[0] == 404
    restore = f"{site.base}/wheelwright/api/packages/gizmo/restore"
    assert request(restore, method="POST", token=site.tokens["viewer"], body={})[0] == 403
    assert request(restore, method="POST", token=site.tokens["admin"], body={})[0] == 200
    assert request(restore, method="POST", token=site.tokens["admin"], body={})[0] == 404, "nothing to restore"


def test_an_uploaded_wheel_is_imported_as_the_admin_who_sent_it(site, tmp_path):
    wheel = wheel_of(tmp_path, "purepkg-1.0-py3-none-any.whl", "purepkg", "1.0").read_bytes()
    url = f"{site.base}/wheelwright/api/import?filename=purepkg-1.0-py3-none-any.whl"
    assert request(url, method="POST", body=wheel, content_type="application/octet-stream")[0] == 401
    assert request(url, method="POST", token=site.tokens["viewer"], body=wheel,
                   content_type="application/octet-stream")[0] == 403
    assert request(url, method="POST", token=site.tokens["admin"], body=wheel,
                   content_type="multipart/form-data; boundary=x")[0] == 415, "no form can send it"
    status, raw = request(url, method="POST", token=site.tokens["admin"], body=wheel,
                          content_type="application/octet-stream")
    assert status == 200, raw
    [build] = json.loads(raw)["imported"]
    assert (build["target"], build["wheels"]) == ("cp39-armv7l", ["purepkg-1.0-py3-none-any.whl"])
    assert (site.output / "simple/purepkg/purepkg-1.0-py3-none-any.whl").read_bytes() == wheel
    with psycopg.connect(site.catalog_dsn) as conn:
        assert conn.execute("SELECT status, imported_by FROM builds WHERE package = 'purepkg'").fetchone() == \
            ("success", "admin")

    stranger = wheel_of(tmp_path, "stranger-1.0-py3-none-any.whl", "stranger", "1.0").read_bytes()
    status, raw = request(f"{site.base}/wheelwright/api/import?filename=stranger-1.0-py3-none-any.whl",
                          method="POST", token=site.tokens["admin"], body=stranger,
                          content_type="application/octet-stream")
    assert status == 404 and b"stranger is not in the catalog" in raw
    for name in ("..%2Fescape.whl", "notes.txt"):
        assert request(f"{site.base}/wheelwright/api/import?filename={name}", method="POST",
                       token=site.tokens["admin"], body=wheel, content_type="application/octet-stream")[0] == 422


def test_an_admin_takes_down_and_imports_from_the_page_in_a_browser(site, tmp_path):
    wheel = wheel_of(tmp_path, "uploaded-1.0-py3-none-any.whl", "uploaded", "1.0")
    browser = Browser()
    try:
        browser.set_cookie(site.base, "_token", site.tokens["admin"])
        browser.goto(f"{site.base}/wheelwright/")
        browser.wait_for("!document.querySelector('#workers tr.asking')"
                         " || document.querySelector('#workers').textContent.includes('could not be asked')",
                         what="the workers panel to have asked the broker")
        browser.evaluate("""(() => { const f = document.getElementById('takedown-form');
            f.elements.package.value = 'gizmo'; f.elements.reason.value = 'maintainer asked';
            window.confirm = () => true; takedown(); })()""")
        browser.wait_for("document.readyState === 'complete' && [...document.querySelectorAll('#takedowns td')]"
                         ".some(td => td.textContent.includes('maintainer asked'))",
                         what="the page to list the takedown")
        document = browser.send("DOM.getDocument")["root"]["nodeId"]
        node = browser.send("DOM.querySelector", nodeId=document, selector="#import-form input[type=file]")["nodeId"]
        browser.send("DOM.setFileInputFiles", nodeId=node, files=[str(wheel)])
        browser.evaluate("importWheel()")
        said = browser.wait_for("(m => m.startsWith('imported') && m)(document.getElementById('operator-message')"
                                ".textContent)", what="the upload to be imported")
        assert "uploaded-1.0-py3-none-any.whl for cp39-armv7l" in said
        browser.screenshot(site.folder / "dashboard-operator-panels.png")
    finally:
        browser.close()
    assert (site.output / "simple/uploaded/uploaded-1.0-py3-none-any.whl").read_bytes() == wheel.read_bytes()
    with psycopg.connect(site.catalog_dsn) as conn:
        assert conn.execute("SELECT removed_by FROM takedowns WHERE package = 'gizmo'").fetchone() == ("admin",)
