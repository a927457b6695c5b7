"""Failure notices: one when something keeps failing, one when it recovers, none in between; delivered
by the Connection ``wheelwright_notify`` to a real SMTP server or a real HTTP webhook.

The streaks are counted in a real catalog; delivery runs Airflow's own code (the SMTP hook, the
Connection from the environment) in a process of its own, as a DAG processor or a record task would.
The DAG callbacks themselves, run by a real DAG processor, are in tests/test_builder_control.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, strategies as st

from support.build_world import add_build, add_release, use_targets
from support.smtp import SMTPServer
from wheelwright.operate import notices
from wheelwright.operate.notices import advance


# -- the streak, as a pure function ----------------------------------------------------------------------

@given(st.lists(st.booleans(), max_size=60), st.integers(min_value=1, max_value=6))
def test_a_streak_says_failing_once_at_its_threshold_and_recovered_once_after(outcomes, threshold):
    failures, notified, run = 0, False, 0
    for failed in outcomes:
        failures, notified, event = advance(failures, notified, failed, threshold)
        previous, run = run, (run + 1 if failed else 0)
        assert failures == run
        assert (event == "failing") == (failed and run == threshold)
        assert (event == "recovered") == (not failed and previous >= threshold)


# -- counted in the catalog ----------------------------------------------------------------------------

def test_a_dag_that_keeps_failing_makes_one_notice_and_its_recovery_another(catalog):
    sent = []
    said = [notices.run_finished(catalog, "pypi_sync", f"run-{i}", failed=True, reason="task_failure",
                                 send=sent.append) for i in range(5)]
    assert [n is not None for n in said] == [False, False, True, False, False]
    assert sent[0].title == "wheelwright: the DAG pypi_sync keeps failing (3 runs in a row)"
    assert "run-2: task_failure" in sent[0].text
    recovered = notices.run_finished(catalog, "pypi_sync", "run-5", failed=False, send=sent.append)
    assert recovered.recovered and recovered.failures == 5 and len(sent) == 2
    assert notices.run_finished(catalog, "pypi_sync", "run-6", failed=False, send=sent.append) is None
    assert notices.failing(catalog) == []


def test_a_notice_that_could_not_be_delivered_is_tried_at_the_next_failure(catalog):
    def broken(_notice):
        raise OSError("connection refused")
    for i in range(3):
        notices.run_finished(catalog, "publish_index", f"r{i}", failed=True, send=broken)
    sent = []
    again = notices.run_finished(catalog, "publish_index", "r3", failed=True, send=sent.append)
    assert again is not None and [n.failures for n in sent] == [4]
    assert notices.failing(catalog)[0]["notified"] is True


def test_a_target_whose_builds_all_fail_is_one_notice_and_a_success_ends_it(catalog):
    use_targets(catalog)
    target = "cp311-armv7l"
    ids = []
    for i in range(12):
        add_release(catalog, f"p{i}", "1.0")
        ids.append(add_build(catalog, f"p{i}", "1.0", target, "failure"))
    catalog.execute("UPDATE builds SET reason = 'gcc: error: unrecognized command-line option', "
                    "finished_at = now() + make_interval(secs => build_id)")
    add_release(catalog, "stopped", "1.0")
    stopped = add_build(catalog, "stopped", "1.0", target, "failure")
    catalog.execute("UPDATE builds SET stopped_by = 'ops', finished_at = now() WHERE build_id = %s", (stopped,))
    catalog.commit()
    sent = []
    notices.builds_recorded(catalog, ids[:9] + [stopped], send=sent.append)
    assert sent == [], "nine failures in a row, and one the operator stopped, are not yet a pattern"
    notices.builds_recorded(catalog, ids[9:], send=sent.append)
    [notice] = sent
    assert notice.subject == f"target:{target}" and notice.failures == 10
    assert "unrecognized command-line option" in notice.text
    add_release(catalog, "good", "1.0")
    good = add_build(catalog, "good", "1.0", target, "success")
    catalog.execute("UPDATE builds SET finished_at = now() + interval '1 hour' WHERE build_id = %s", (good,))
    catalog.commit()
    notices.builds_recorded(catalog, [good], send=sent.append)
    assert sent[-1].recovered and sent[-1].failures == 12


# -- delivered through the Connection wheelwright_notify -------------------------------------------------

SEND = textwrap.dedent("""
    import sys
    from wheelwright.operate import dag_tasks
    from wheelwright.operate.notices import Notice
    send = dag_tasks.notifier()
    assert send is not None, "the Connection was not found"
    send(Notice("target:cp311-armv7l", 10, False, "numpy 2.1.0: ran out of memory <4 GiB> & more"))
    print("sent")
""")


def deliver_with(connection: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_CONN_WHEELWRIGHT_NOTIFY=json.dumps(connection), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    return subprocess.run([sys.executable, "-c", SEND], env=env, capture_output=True, text=True, timeout=180)


def test_a_notice_reaches_a_real_smtp_server_through_airflows_smtp_hook():
    with SMTPServer() as smtp:
        done = deliver_with({"conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port,
                             "extra": {"to": "ops@example.org, pi-admin@example.org",
                                       "from_email": "wheelwright@example.org",
                                       "disable_ssl": True, "disable_tls": True, "retry_limit": 0}})
        assert done.returncode == 0, done.stderr[-3000:]
        [mail] = smtp.wait_for(1)
    assert mail.rcpt_to == ["ops@example.org", "pi-admin@example.org"]
    assert mail.subject == "wheelwright: the target cp311-armv7l keeps failing (10 builds in a row)"
    assert "numpy 2.1.0: ran out of memory &lt;4 GiB&gt; &amp; more" in mail.body


class Webhook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Webhook.received.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    Webhook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_notice_reaches_a_real_webhook_as_json_with_its_token(webhook):
    done = deliver_with({"conn_type": "http", "host": "127.0.0.1", "port": webhook.server_address[1],
                         "schema": "hooks/wheelwright", "password": "s3cret"})
    assert done.returncode == 0, done.stderr[-3000:]
    [(path, auth, body)] = Webhook.received
    assert (path, auth) == ("/hooks/wheelwright", "Bearer s3cret")
    assert body["kind"] == "target" and body["name"] == "cp311-armv7l" and body["failures"] == 10
    assert body["text"].startswith("wheelwright: the target cp311-armv7l keeps failing")


def test_a_webhook_that_refuses_leaves_the_notice_owed(catalog, webhook):
    url = f"http://127.0.0.1:{webhook.server_address[1]}/gone"
    answer = Webhook.do_POST
    Webhook.do_POST = lambda self: (self.send_response(500), self.end_headers())  # noqa: E731
    try:
        for i in range(3):
            notices.run_finished(catalog, "build_wheels", f"r{i}", failed=True,
                                 send=lambda n: notices.post_webhook(url, n))
    finally:
        Webhook.do_POST = answer
    assert notices.failing(catalog)[0]["notified"] is False
