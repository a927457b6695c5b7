"""The PyPI client against the PyPI double over real HTTP on 127.0.0.1.

Every test names one thing the client promises: how it pages the changelog, when it stops, how it
waits when PyPI says "slow down", what it retries and what it gives up on with a PyPIError. Sleeps are
injected and recorded, so "waited N seconds" is asserted without waiting.
"""

from __future__ import annotations

import logging
import socket
import xmlrpc.client

import pytest

from wheelwright import config
from wheelwright.errors import PyPIError
from wheelwright.pypi.client import PyPI, rate_limit_wait, retry_after, spent_budget_reset
from wheelwright.testing.pypi_double import PyPIDouble


def log_of(n: int) -> list[list]:
    """A well-formed changelog of ``n`` events: one package, one release per serial after its create."""
    rows = [["Alpha", None, 1_600_000_000, "create", 1]]
    rows += [["Alpha", f"1.{i}", 1_600_000_000 + i, "new release", i] for i in range(2, n + 1)]
    return rows


class Sleeps(list):
    """A stand-in for time.sleep that remembers what it was asked to wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def pypi_double():
    with PyPIDouble(log_of(23), page_size=5) as double:
        yield double


@pytest.fixture
def client(pypi_double, sleeps):
    with PyPI(pypi_double.xmlrpc_url, timeout=5, max_attempts=3, sleep=sleeps) as pypi:
        yield pypi


def since_calls(double: PyPIDouble) -> list[int]:
    return [params[0] for method, params in double.calls if method == "changelog_since_serial"]


# -- paging ------------------------------------------------------------------------------------------

def test_changelog_pages_walk_every_page_from_the_last_serial_of_the_previous(client, pypi_double):
    pages = list(client.changelog_pages(0))
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert [row for page in pages for row in page] == log_of(23)
    assert since_calls(pypi_double) == [0, 5, 10, 15, 20]


def test_paging_stops_once_caught_up_with_until_without_asking_again(client, pypi_double):
    pages = list(client.changelog_pages(3, until=10))
    assert [row[4] for page in pages for row in page] == list(range(4, 14))
    assert since_calls(pypi_double) == [3, 8], "a page reaching `until` ends paging"


def test_paging_from_the_last_serial_makes_no_changelog_call(client, pypi_double):
    assert list(client.changelog_pages(23)) == []
    assert since_calls(pypi_double) == []


def test_paging_stops_on_an_empty_page_even_if_until_is_further(client, pypi_double):
    pages = list(client.changelog_pages(20, until=1000))
    assert [row[4] for page in pages for row in page] == [21, 22, 23]
    assert since_calls(pypi_double) == [20, 23]


def test_paging_does_not_chase_events_that_arrive_while_it_pages(client, pypi_double):
    pages = client.changelog_pages(0)
    first = next(pages)
    pypi_double.append([["Beta", None, 1_700_000_000, "create", s] for s in range(24, 60)])
    rest = list(pages)
    serials = [row[4] for page in [first, *rest] for row in page]
    assert serials == list(range(1, 26)), "the page that reaches the starting last serial is the last"
    assert since_calls(pypi_double) == [0, 5, 10, 15, 20]


def test_paging_steers_by_integer_serials_only_and_hands_malformed_rows_on(sleeps):
    rows = [["a", None, 1, "create", 1], ["a", None, 2, "create", "2"], ["a", "1", 3, "new release", 3],
            "not a row", ["b", None, 4, "create", 4]]
    with PyPIDouble(rows, page_size=2) as double, PyPI(double.xmlrpc_url, sleep=sleeps) as pypi:
        pages = list(pypi.changelog_pages(0))
    assert [row for page in pages for row in page] == rows
    assert since_calls(double) == [0, 1, 3]


def test_a_page_that_makes_no_progress_is_an_error_not_a_loop(sleeps):
    with PyPIDouble([["a", None, 1, "create"], "junk"], page_size=10) as double, \
            PyPI(double.xmlrpc_url, sleep=sleeps) as pypi:
        pages = pypi.changelog_pages(0, until=5)
        assert next(pages) == [["a", None, 1, "create"], "junk"]
        with pytest.raises(PyPIError, match="made no progress"):
            next(pages)
    assert since_calls(double) == [0]


def test_last_serial_and_one_page(client):
    assert client.last_serial() == 23
    assert client.changelog_since(21) == log_of(23)[21:]


# -- rate limits ---------------------------------------------------------------------------------------

def test_rate_limit_fault_waits_the_seconds_pypi_names_then_succeeds(client, pypi_double, sleeps):
    pypi_double.fail_next(1, "rate_limit")
    assert client.last_serial() == 23
    assert sleeps == [1.0]
    assert len(pypi_double.calls) == 2


def test_http_429_waits_for_retry_after_then_succeeds(client, pypi_double, sleeps):
    pypi_double.fail_next(1, "http_429")
    assert client.changelog_since(20) == log_of(23)[20:]
    assert sleeps == [1.0]


def test_a_spent_ratelimit_budget_delays_the_next_call_until_it_resets(client, pypi_double, sleeps):
    pypi_double.fail_next(1, "exhausted")
    assert client.last_serial() == 23, "the call that spends the budget still succeeds"
    assert sleeps == []
    assert client.last_serial() == 23
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 1.0, f"expected a wait of up to 1 s, got {sleeps}"


def test_a_rate_limit_fault_with_a_spent_budget_waits_once_not_twice(sleeps):
    with PyPIDouble([], rate_limit=(1, 60.0)) as double, \
            PyPI(double.xmlrpc_url, max_attempts=2, sleep=sleeps) as pypi:
        pypi.last_serial()
        assert len(sleeps) == 0
        with pytest.raises(PyPIError, match="rate limited"):
            pypi.last_serial()
    assert len(sleeps) == 2, "one wait for the spent budget, one for the fault"
    assert all(50 < s <= 60 for s in sleeps), sleeps


def test_rate_limit_without_a_number_waits_a_minute():
    fault = xmlrpc.client.Fault(-32500, "HTTPTooManyRequests: slow down")
    assert rate_limit_wait(fault) == 60.0
    named = xmlrpc.client.Fault(-32500, "HTTPTooManyRequests: ... Limit may reset in 17 seconds.")
    assert rate_limit_wait(named) == 17.0


def test_other_minus_32500_faults_are_not_rate_limits():
    assert rate_limit_wait(xmlrpc.client.Fault(-32500, "RuntimeError: method removed")) is None
    assert rate_limit_wait(xmlrpc.client.Fault(-32601, "too many requests")) is None


@pytest.mark.parametrize("headers, wait", [
    ({"RateLimit": "limit=100, remaining=0, reset=5"}, 5.0),
    ({"RateLimit": '"default";r=0;t=7'}, 7.0),
    ({"RateLimit-Limit": "100", "RateLimit-Remaining": "0", "RateLimit-Reset": "9"}, 9.0),
    ({"RateLimit": "limit=100, remaining=3, reset=5"}, None),
    ({"RateLimit-Remaining": "0"}, 60.0),
    ({}, None),
])
def test_ratelimit_headers_in_every_draft_shape(headers, wait):
    assert spent_budget_reset(headers) == wait


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after({"Retry-After": "3"}) == 3.0
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after({}) is None


# -- retries and giving up ---------------------------------------------------------------------------

def test_http_500_is_retried_with_backoff_then_succeeds(client, pypi_double, sleeps):
    pypi_double.fail_next(2, "http_500")
    assert client.last_serial() == 23
    assert len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0, f"exponential back-off, got {sleeps}"


def test_http_500_every_time_gives_up_after_max_attempts(client, pypi_double, sleeps, caplog):
    pypi_double.fail_next(3, "http_500")
    with caplog.at_level(logging.WARNING, logger="wheelwright.pypi.client"):
        with pytest.raises(PyPIError, match=r"failed changelog_last_serial\(\) 3 times; last: HTTP 500"):
            client.last_serial()
    assert len(pypi_double.calls) == 3
    retries = [r for r in caplog.records if r.name == "wheelwright.pypi.client"]
    assert len(retries) == 2, "one log line per retry"
    assert "attempt 1/3" in retries[0].getMessage()


def test_http_429_every_time_gives_up_after_max_attempts(client, pypi_double, sleeps):
    pypi_double.fail_next(3, "http_429")
    with pytest.raises(PyPIError, match="HTTP 429"):
        client.changelog_since(0)
    assert sleeps == [1.0, 1.0]


def test_a_body_that_is_not_xml_rpc_ends_in_pypi_error(client, pypi_double):
    pypi_double.fail_next(3, "garbage")
    with pytest.raises(PyPIError, match="not XML-RPC"):
        client.last_serial()


def test_a_timeout_is_retried(pypi_double, sleeps):
    pypi_double.fail_next(1, "slow")
    with PyPI(pypi_double.xmlrpc_url, timeout=0.3, max_attempts=3, sleep=sleeps) as pypi:
        assert pypi.last_serial() == 23
    assert len(sleeps) == 1


def test_a_refused_connection_is_retried_then_reported(sleeps):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with PyPI(f"http://127.0.0.1:{port}/pypi", max_attempts=2, sleep=sleeps) as pypi:
        with pytest.raises(PyPIError, match="connection failed"):
            pypi.last_serial()
    assert len(sleeps) == 1


def test_a_disabled_method_fails_at_once_without_retrying(client, pypi_double, sleeps):
    with pytest.raises(PyPIError, match="no longer supports the XMLRPC list_packages"):
        client._call("list_packages")
    assert sleeps == [] and len(pypi_double.calls) == 1


def test_every_request_carries_our_user_agent(client, pypi_double):
    client.last_serial()
    client.project_json("alpha")
    assert pypi_double.user_agents == [config.USER_AGENT] * 2


def test_a_custom_user_agent_is_sent(pypi_double, sleeps):
    with PyPI(pypi_double.xmlrpc_url, user_agent="tester/1", sleep=sleeps) as pypi:
        pypi.last_serial()
    assert pypi_double.user_agents == ["tester/1"]


# -- JSON API ------------------------------------------------------------------------------------------

def test_project_json_of_an_unknown_project_is_none(client):
    assert client.project_json("no-such-project") is None


def test_project_json_finds_a_project_in_any_spelling(client):
    document = client.project_json("ALPHA")
    assert document["info"]["name"] == "Alpha"
    assert document["info"]["version"] == "1.23"
    assert set(document["releases"]) == {f"1.{i}" for i in range(2, 24)}
