"""The public site as people see it: a published tree served by nginx with the shipped config, opened
in Debian's Chromium, on a desktop and on a phone.

The world: two Pi targets; RPi.GPIO built for the first (a binary wheel needing an apt package, with
pip dependencies), its newest release queued, an older one failed with its log; numpy waiting; a few
hundred other names for the search; download figures and a day of downloads for the stats page. Every
page is screenshotted into the test's folder (and $WHEELWRIGHT_ARTEFACTS when set).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest

from support.airflow_processes import drop_database, free_port
from support.browser import Browser
from support.catalog import database_dsn
from support.index_world import World, make_wheel
from support.serving import Served, serve
from wheelwright.publish import site as site_module
from wheelwright.publish.stats import write_stats
from wheelwright.publish.writer import publish

pytestmark = pytest.mark.timeout(300)

FIRST, SECOND = "cp311-armv7l", "cp313-aarch64"
PHONE = (390, 844)


@dataclass
class Site:
    served: Served
    browser: Browser
    shots: Path

    @property
    def url(self) -> str:
        return self.served.url

    def open(self, path: str, *, ready: str = "document.readyState === 'complete'") -> None:
        self.browser.goto(self.url + path)
        self.browser.wait_for(ready, timeout=30, what=f"{path} to be ready")

    def shot(self, name: str) -> None:
        self.browser.screenshot(self.shots / f"{name}.png")

    def js(self, expression: str):
        return self.browser.evaluate(expression)


def build_world(conn, output: Path) -> None:
    world = World(conn, output)
    world.target(FIRST, "cp311", "linux_armv7l", "bookworm", 1)
    world.target(SECOND, "cp313", "linux_aarch64", "trixie", 2)
    gpio = world.package("RPi.GPIO", summary="A module to control Raspberry Pi GPIO channels",
                         aliases=("rpi_gpio",))
    for version in ("0.7.0", "0.7.1", "0.7.2"):
        world.release(gpio, version)
    world.build(gpio, "0.7.0", FIRST, status="failure", reason="error: command 'gcc' failed",
                log="gcc -c source/c_gpio.c\nsource/c_gpio.c:3:10: fatal error: Python.h: No such file\n")
    world.wheel(gpio, "0.7.1", FIRST, wheel=make_wheel("RPi.GPIO", "0.7.1", tag="cp311-cp311-linux_armv7l"),
                apt=("libgpiod2", "libopenblas0-pthread"))
    conn.execute("UPDATE wheels SET requires_dist = %s", (["gpiozero>=2.0", 'pytest; extra == "test"'],))
    numpy = world.package("numpy", summary="Fundamental package for array computing in Python")
    world.release(numpy, "2.1.0")
    for n in range(300):
        world.package(f"demo-{n:03d}-{'gpio' if n % 50 == 0 else 'tool'}")
    conn.execute("UPDATE builds SET finished_at = now() - interval '1 hour'")
    through = date.today() - timedelta(days=1)
    conn.execute("INSERT INTO download_counts VALUES ('rpi-gpio', '0.7.1', 1234, 56789), "
                 "('numpy', '2.1.0', 99, 100)")
    conn.execute("INSERT INTO download_counts_state (through) VALUES (%s)", (through,))
    for days_ago in range(10):
        conn.execute("INSERT INTO downloads VALUES (%s, %s, 'rpi-gpio', '0.7.1', 'cp311', 'linux_armv7l', "
                     "'3.11', 'pip', '23.0.1', %s)",
                     (date.today() - timedelta(days=days_ago), "rpi_gpio-0.7.1-cp311-cp311-linux_armv7l.whl",
                      10 + days_ago * 3))
    conn.execute("INSERT INTO dashboard_samples VALUES (now(), %s, 2, 2, now())", (FIRST,))
    conn.execute("INSERT INTO sync_samples VALUES (now() - interval '3 days', 1, 1, 0, 0), (now(), 2, 2, 1, 100)")
    conn.execute("UPDATE packages SET change_seq = nextval('change_seq')")
    conn.commit()


@pytest.fixture(scope="module")
def site(tmp_path_factory, pg_server, catalog_template):
    root = tmp_path_factory.mktemp("site")
    name = f"wheelwright_site_{free_port()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{catalog_template}"')
    browser = served = None
    try:
        output = root / "www"
        with psycopg.connect(database_dsn(pg_server, name)) as conn, pytest.MonkeyPatch.context() as patch:
            build_world(conn, output)
            # crowded words, as "python" is on PyPI: their shards split and keep only their most downloaded
            patch.setattr(site_module, "SHARD_LIMIT", 100)
            publish(conn, output)
            write_stats(conn, output)
        served = serve(output, root / "nginx", "nginx")
        browser = Browser()
        shots = root / "screenshots"
        shots.mkdir()
        yield Site(served, browser, shots)
    finally:
        if browser is not None:
            browser.close()
        if served is not None:
            served.stop()
        drop_database(pg_server, name)


@pytest.fixture
def desktop(site):
    site.browser.resize(1280, 900)
    return site


@pytest.fixture
def phone(site):
    site.browser.resize(*PHONE, mobile=True)
    yield site
    site.browser.resize(1280, 900)


def only_this_origin(site: Site) -> None:
    elsewhere = [u for u in site.browser.requested() if not u.startswith(site.url) and not u.startswith("data:")]
    assert elsewhere == [], "the public pages load nothing from elsewhere"


def chart_style(site: Site) -> dict:
    return site.js("""(() => { const tick = document.querySelector('svg.chart .tick');
        const grid = document.querySelector('svg.chart .grid');
        return {tick: getComputedStyle(tick).fontSize, body: getComputedStyle(document.body).fontSize,
                grid: getComputedStyle(grid).stroke}; })()""")


def test_the_home_page_says_what_the_index_serves_with_styled_charts(desktop):
    desktop.open("/")
    assert desktop.js("document.querySelector('header.site nav').innerText").split() == [
        "Home", "Packages", "Stats", "FAQ", "JSON", "API", "Reports"]
    totals = desktop.js("Object.fromEntries([...document.querySelectorAll('#totals .card')].map("
                        "c => [c.querySelector('.label').innerText, c.querySelector('.value').dataset.value]))")
    assert totals["PACKAGES"] == "302" and totals["WITH WHEELS"] == "1" and totals["WHEELS"] == "1"
    assert desktop.js("document.querySelectorAll('svg.chart').length") == 3
    style = chart_style(desktop)
    assert style["tick"] == "10px" and style["body"] == "15px", "axis labels smaller than the text"
    assert style["grid"] == "rgb(238, 242, 247)", "gridlines are drawn light"
    assert "RPi.GPIO" in desktop.js("document.querySelector('#recent').innerText")
    command = desktop.js("document.querySelector('pre.command code').innerText")
    assert command == f"pip3 install PACKAGE --extra-index-url {desktop.url}/simple/", \
        "the page puts its own address in what a Pi user copies"
    assert f"extra-index-url={desktop.url}/simple" in desktop.js("document.body.innerText")
    only_this_origin(desktop)
    desktop.shot("home")


def test_a_project_page_says_where_each_release_stands(desktop):
    desktop.open("/project/rpi-gpio/", ready="document.querySelector('.position') && "
                                             "document.querySelector('.position').textContent !== ''")
    assert desktop.js("document.title") == "RPi.GPIO · wheelwright"
    rows = desktop.js("""[...document.querySelectorAll('.release')].map(r => [r.dataset.version,
        [...r.querySelectorAll('tr')].slice(1).map(t => t.cells[0].innerText + ': ' + t.cells[1].innerText)])""")
    assert rows == [
        ["0.7.2", [f"{FIRST}: queued · position 1 of 2, about 13 h",   # 2 builds a day
                   f"{SECOND}: waiting for {FIRST} to try it first"]],
        ["0.7.1", [f"{FIRST}: built", f"{SECOND}: queued · position 1, no builds lately to estimate from"]],
        ["0.7.0", [f"{FIRST}: failed error: command 'gcc' failed",
                   f"{SECOND}: queued · position 2, no builds lately to estimate from"]],
    ], rows
    install = desktop.js("[...document.querySelectorAll('section.install pre')].map(p => p.innerText)")
    assert install[:2] == [f"pip3 install RPi.GPIO --extra-index-url {desktop.url}/simple/",
                           f"uv pip install RPi.GPIO --extra-index-url {desktop.url}/simple/"], \
        "what a Pi user copies: the page's own address, and no prompt (the $ is drawn, not text)"
    assert "sudo apt install libopenblas0-pthread" in install, "what Pi OS Lite lacks (it has libgpiod2)"
    assert desktop.js("[...document.querySelectorAll('ul.requires code')].map(c => c.innerText)") == [
        "gpiozero>=2.0", 'pytest; extra == "test"']
    assert "1,234 downloads in 30 days · 56,789 in all" in desktop.js("document.querySelector('.facts').innerText")
    log = desktop.js("document.querySelector('#v0\\\\.7\\\\.0 a[href$=\".txt.gz\"]').href")
    only_this_origin(desktop)
    desktop.shot("project")
    desktop.browser.goto(log)
    assert "fatal error: Python.h" in desktop.js("document.body.innerText"), "the failure's log opens as text"


def test_a_project_page_reads_well_on_a_phone(phone):
    phone.open("/project/rpi-gpio/")
    assert phone.js("document.documentElement.scrollWidth <= window.innerWidth"), \
        "nothing wider than the phone's screen (wide tables scroll in their own box)"
    assert phone.js("document.querySelector('header.site input').getBoundingClientRect().right "
                    "<= window.innerWidth"), "the header's search box fits"
    phone.shot("project-phone")
    phone.open("/")
    assert phone.js("document.documentElement.scrollWidth <= window.innerWidth")
    phone.shot("home-phone")


def search(site: Site, text: str) -> None:
    """Type ``text`` into the search box and wait for the page to answer it."""
    done = site.js("document.getElementById('status').dataset.done")
    site.js(f"""(() => {{ const q = document.getElementById('q'); q.value = {json.dumps(text)};
                         q.dispatchEvent(new Event('input')); }})()""")
    site.browser.wait_for(f"document.getElementById('status').dataset.done !== {json.dumps(done)}", timeout=10)


def test_the_search_page_finds_names_by_the_start_of_their_words(desktop):
    desktop.open("/packages.html?q=gpio", ready="document.getElementById('status').dataset.done")
    found = desktop.js("[...document.querySelectorAll('#results li a')].map(a => a.innerText)")
    assert found[0] == "RPi.GPIO", "the most downloaded first"
    assert set(found) == {"RPi.GPIO", *(f"demo-{n:03d}-gpio" for n in range(0, 300, 50))}
    search(desktop, "rpi gp")
    assert desktop.js("[...document.querySelectorAll('#results li a')].map(a => a.innerText)") == ["RPi.GPIO"]
    assert desktop.js("location.search") == "?q=rpi+gp", "the address can be shared"
    search(desktop, "demo gpio")
    assert sorted(desktop.js("[...document.querySelectorAll('#results li a')].map(a => a.innerText)")) == [
        f"demo-{n:03d}-gpio" for n in range(0, 300, 50)], "the uncrowded word's shard holds every match"
    assert desktop.js("document.getElementById('status').innerText").startswith("6 found")
    search(desktop, "tool")
    assert desktop.js("document.querySelectorAll('#results li').length") == 50
    assert desktop.js("document.getElementById('status').innerText").startswith("more than "), \
        "a crowded word says its count is a floor"
    only_this_origin(desktop)
    desktop.shot("search")


def test_the_404_page_answers_404_and_suggests_the_closest_names(desktop):
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(desktop.url + "/project/rpi-gpoi/", timeout=10)
    assert missing.value.code == 404 and b"Not found" in missing.value.read()
    desktop.open("/project/rpi-gpoi/", ready="document.getElementById('status').dataset.done")
    assert desktop.js("document.getElementById('status').innerText") == "Did you mean:"
    assert desktop.js("[...document.querySelectorAll('#closest a')].map(a => a.innerText)")[0] == "RPi.GPIO"
    assert desktop.js("getComputedStyle(document.querySelector('header.site')).display") == "flex", \
        "styled at any depth"
    only_this_origin(desktop)
    desktop.shot("not-found")
    with pytest.raises(urllib.error.HTTPError) as malformed:
        urllib.request.urlopen(desktop.url + "/project/%E0%A4/", timeout=10)
    assert malformed.value.code == 400, "an address no project can have (not even UTF-8) is refused at the door"


def test_the_stats_faq_and_json_pages_share_the_look(desktop):
    desktop.open("/stats/")
    style = chart_style(desktop)
    assert style["tick"] == "10px" and style["grid"] == "rgb(238, 242, 247)", "the stats chart is styled"
    assert desktop.js("getComputedStyle(document.querySelector('header.site')).display") == "flex"
    desktop.shot("stats")
    desktop.open("/faq.html")
    assert f"extra-index-url={desktop.url}/simple" in desktop.js("document.body.innerText")
    assert FIRST in desktop.js("document.body.innerText") and "bookworm" in desktop.js("document.body.innerText")
    desktop.shot("faq")
    desktop.open("/json.html")
    assert f'requests.get("{desktop.url}/project/numpy/json/")' in desktop.js("document.body.innerText")
    desktop.shot("json-api")
    project = json.loads(urllib.request.urlopen(desktop.url + "/project/rpi-gpio/json/", timeout=10).read())
    assert project["releases"]["0.7.1"]["pip_dependencies"] == ["gpiozero>=2.0", 'pytest; extra == "test"']
    only_this_origin(desktop)
