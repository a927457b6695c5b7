"""What the index's web servers do with a request target, as a pure function (the rule's Python side).

The same table runs through the real servers (nginx, Varnish, the static server) in
test_edge_requests.py; here it runs through :func:`request_paths.judge`, and hypothesis looks for
targets that would put a control character into a Location header, redirect outside the prefix, or
redirect twice.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.utils import canonicalize_name

from support.edge_cases import CASES, NAMES, TARGETS
from wheelwright.names import canonical_or_none, is_canonical
from wheelwright.publish import request_paths
from wheelwright.publish.request_paths import BAD_REQUEST, GO_ON, REDIRECT, TOO_LONG, judge


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_shared_table_holds_for_the_python_rule(case):
    verdict = judge(case.target)
    expected = case.status if case.status in (REDIRECT, BAD_REQUEST, TOO_LONG) else GO_ON
    assert (verdict.status, verdict.location) == (expected, case.location if expected == REDIRECT else None)


_REFUSED = re.compile(rb"[\x00-\x1f\x7f-\xff\\]")


@settings(max_examples=500)
@given(TARGETS)
def test_no_control_character_ever_reaches_a_location(target):
    verdict = judge(target)
    if verdict.location is not None:
        assert re.fullmatch(r"[!-~]+", verdict.location), f"{target!r} -> {verdict.location!r}"
        assert "\r" not in verdict.location and "\n" not in verdict.location and "\0" not in verdict.location


@settings(max_examples=500)
@given(TARGETS)
def test_every_redirect_is_a_relative_path_under_the_same_prefix(target):
    verdict = judge(target)
    if verdict.status != REDIRECT:
        return
    room = target.split(b"/")[1].decode()
    location = verdict.location
    assert location.startswith(f"/{room}/"), f"{target!r} left /{room}/: {location!r}"
    segments = unquote(location).split("/")
    assert "." not in segments and ".." not in segments, f"{target!r} -> {location!r} has a dot segment"
    assert "?" not in location and "#" not in location, "a decoded ? or # must stay part of the path"
    assert judge(location) == request_paths.Verdict(GO_ON, None, unquote(location)), \
        f"{location!r} (from {target!r}) is not served as it is: a redirect must land"
    name, rest = re.fullmatch(rb"/[a-z]+/([^/]+)(/.*)?", unquote_to_bytes(target.partition(b"?")[0]), re.S).groups()
    assert unquote_to_bytes(location) == f"/{room}/{canonicalize_name(name.decode())}".encode() + (rest or b"/"), \
        "the rest of the path must survive the redirect, byte for byte"


@settings(max_examples=500)
@given(TARGETS)
def test_a_target_with_a_refused_byte_is_refused_whatever_else_it_holds(target):
    if _REFUSED.search(unquote_to_bytes(target)):
        assert judge(target).status in (BAD_REQUEST, TOO_LONG)


@given(NAMES, st.sampled_from(["simple", "project"]))
def test_canonical_names_round_trip(name, room):
    verdict = judge(f"/{room}/{name}/".encode())
    canon = canonical_or_none(name)
    if canon is None or canon == name:
        assert verdict.status in (GO_ON, BAD_REQUEST)   # BAD_REQUEST: "." and ".." are dot segments
        return
    assert verdict == request_paths.Verdict(REDIRECT, f"/{room}/{canon}/", f"/{room}/{name}/")
    assert canonicalize_name(name) == canon and is_canonical(canon)
    assert judge(verdict.location).status == GO_ON, "the canonical URL is final"


def test_a_target_past_the_limit_is_too_long_and_one_at_it_is_not():
    at_limit = b"/simple/demo/" + b"a" * (request_paths.MAX_TARGET - len(b"/simple/demo/"))
    assert judge(at_limit).status == GO_ON
    assert judge(at_limit + b"a").status == TOO_LONG
