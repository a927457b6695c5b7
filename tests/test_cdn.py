"""The purger: which keys a response carries, what a publish owes, and delivering it to Fastly and
Cloudflare (local doubles of their APIs, driven by the product's own client code) without losing any.

Varnish, the edge we can run for real, has its own story in test_cdn_varnish.py.
"""

from __future__ import annotations

import psycopg
import pytest

from support.cdn_doubles import Bucket, CloudflareDouble, FastlyDouble
from support.index_world import World
from wheelwright.errors import ConfigError
from wheelwright.publish import cdn, writer


# -- keys and configuration (pure) ----------------------------------------------------------------------

@pytest.mark.parametrize("path, keys", [
    ("/simple/", ("root", "all")),
    ("/simple/index.json", ("root", "all")),
    ("/simple/rpi-gpio/", ("project/rpi-gpio", "all")),
    ("/simple/rpi-gpio/index.html", ("project/rpi-gpio", "all")),
    ("/simple/rpi-gpio/rpi_gpio-0.7.1-cp311-cp311-linux_armv7l.whl", ("project/rpi-gpio", "all")),
    ("/simple/rpi-gpio/rpi_gpio-0.7.1-cp311-cp311-linux_armv7l.whl.metadata", ("project/rpi-gpio", "all")),
    ("/project/rpi-gpio/", ("project/rpi-gpio", "all")),
    ("/project/rpi-gpio/json/", ("project/rpi-gpio", "all")),
    ("/project/RPi.GPIO/", ("all",)),          # redirected to /project/rpi-gpio/, which has the key
    ("/simple/a\r\nSet-Cookie: x=1/", ("all",)),   # nothing a client wrote becomes a header
    ("/packages.json", ("search", "all")),
    ("/reports/index.html", ("reports", "all")),
    ("/logs/0000/0000/0001.txt.gz", ("logs", "all")),
    ("/feeds/failures.atom", ("feeds", "all")),
    ("/favicon.ico", ("all",)),
])
def test_everything_of_one_package_carries_one_key(path, keys):
    assert cdn.keys_for_path(path) == keys


@pytest.mark.parametrize("spec, kind", [
    ("varnish:http://127.0.0.1:6081", cdn.VarnishPurger),
    ("fastly:SU1Z0isxPaozGVKXdv0eY", cdn.FastlyPurger),
    ("cloudflare:023e105f4ecef8ad9ca31a8372d0c353", cdn.CloudflarePurger),
])
def test_the_cdn_is_named_by_one_setting(spec, kind):
    purger = cdn.purger_from_env({"WHEELWRIGHT_CDN": spec, "WHEELWRIGHT_CDN_TOKEN": "secret"})
    assert type(purger) is kind
    assert cdn.purger_from_env({}) is None


@pytest.mark.parametrize("env, complaint", [
    ({"WHEELWRIGHT_CDN": "akamai:x"}, "unknown CDN"),
    ({"WHEELWRIGHT_CDN": "fastly"}, "must be"),
    ({"WHEELWRIGHT_CDN": "fastly:abc"}, "WHEELWRIGHT_CDN_TOKEN"),
    ({"WHEELWRIGHT_CDN": "cloudflare:../../x", "WHEELWRIGHT_CDN_TOKEN": "t"}, "not a cloudflare id"),
    ({"WHEELWRIGHT_CDN": "varnish:ftp://x"}, "http(s) URL"),
    ({"WHEELWRIGHT_CDN": "fastly:abc", "WHEELWRIGHT_CDN_TOKEN": "t", "WHEELWRIGHT_CDN_API": "x"}, "http(s)"),
])
def test_an_unusable_cdn_setting_is_refused_with_a_reason(env, complaint):
    with pytest.raises(ConfigError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        cdn.purger_from_env(env)


# -- the doubles, and delivering to them ------------------------------------------------------------------

@pytest.fixture
def fastly():
    double = FastlyDouble("SU1Z0isxPaozGVKXdv0eY", "fastly-token")
    yield double
    double.stop()


@pytest.fixture
def cloudflare():
    # Cloudflare's Free plan: 5 purge requests a minute, a bucket of 25.
    double = CloudflareDouble("023e105f4ecef8ad9ca31a8372d0c353", "cf-token", bucket=Bucket(25, 5 / 60))
    yield double
    double.stop()


def fastly_purger(double, token="fastly-token"):
    return cdn.purger_for(f"fastly:{double.account}", token, double.url)


def cloudflare_purger(double, token="cf-token"):
    return cdn.purger_for(f"cloudflare:{double.account}", token, double.url)


def packages(n: int) -> list[str]:
    return [cdn.project_key(f"pkg-{i:04d}") for i in range(n)]


def owed(conn) -> list[str]:
    return [k for (k,) in conn.execute("SELECT key FROM cdn_purges ORDER BY key")]


def owe(conn, keys, removals=None):
    with conn.transaction():
        cdn.owe(conn, keys, removals)


def test_fastly_gets_soft_purges_of_up_to_256_keys_a_call(catalog, fastly):
    owe(catalog, packages(1000))
    purger = fastly_purger(fastly)
    delivery = cdn.deliver(catalog, purger)
    assert [len(c.keys) for c in fastly.calls] == [256, 256, 256, 232]
    assert all(c.soft for c in fastly.calls), "PyPI soft-purges at Fastly; so do we"
    assert sorted(k for c in fastly.calls for k in c.keys) == packages(1000)
    assert delivery.calls == 4 and len(delivery.purged) == 1000 and owed(catalog) == []


def test_cloudflare_gets_at_most_100_tags_a_call_and_its_rate_limit_is_honoured(catalog, cloudflare):
    owe(catalog, packages(3000))
    purger = cloudflare_purger(cloudflare)
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        cloudflare.advance(seconds)

    delivery = cdn.deliver(catalog, purger, sleep=sleep, deadline=600)
    assert all(len(c.keys) <= 100 for c in cloudflare.calls) and len(cloudflare.calls) == 30
    assert sorted(k for c in cloudflare.calls for k in c.keys) == packages(3000)
    assert cloudflare.refused == len(waits) >= 5, "30 calls with a bucket of 25 must meet the limit"
    assert all(w >= 1 for w in waits), "the purger waits as long as Retry-After says"
    assert owed(catalog) == [] and len(delivery.purged) == 3000


def test_a_refused_token_leaves_the_purge_owed(catalog, cloudflare):
    owe(catalog, packages(3))
    delivery = cdn.deliver(catalog, cloudflare_purger(cloudflare, token="wrong"), sleep=lambda s: None)
    assert len(delivery.failed) == 3 and "403" in delivery.error
    assert cloudflare.calls == [] and owed(catalog) == packages(3)
    assert cdn.lag(catalog)[2] == 1, "the failed attempt is counted"


def test_an_api_outage_loses_no_purge_and_backs_off(catalog, fastly):
    owe(catalog, packages(300))
    fastly.down = True
    waits = []
    delivery = cdn.deliver(catalog, fastly_purger(fastly), sleep=waits.append, deadline=5, backoff=0.5)
    assert waits == [0.5, 1.0, 2.0], "exponential back-off until the deadline"
    assert len(delivery.failed) == 300 and owed(catalog) == packages(300)
    assert cdn.deliver(catalog, fastly_purger(fastly)).purged == [], "not before its back-off"

    fastly.down = False
    delivery = cdn.deliver(catalog, fastly_purger(fastly), force=True)   # `wheelwright purge`
    assert len(delivery.purged) == 300 and owed(catalog) == []


def test_a_key_owed_again_while_its_purge_is_in_flight_stays_owed(catalog, settings, fastly):
    owe(catalog, ["project/demo"])

    class Racing(cdn.FastlyPurger):
        def purge(self, keys):
            with psycopg.connect(settings.dsn) as other:   # a publish commits meanwhile
                owe(other, ["project/demo"])
            super().purge(keys)

    purger = Racing(service=fastly.account, token="fastly-token", api=fastly.url)
    assert cdn.deliver(catalog, purger).purged == ["project/demo"]
    assert owed(catalog) == ["project/demo"], "the newer change must still be purged"


def test_a_first_publish_of_everything_owes_one_purge_of_all(catalog):
    owe(catalog, packages(cdn.PURGE_ALL_ABOVE + 1))
    assert owed(catalog) == ["all"]


# -- what a publish owes ------------------------------------------------------------------------------------

@pytest.fixture
def world(catalog, settings):
    world = World(catalog, settings.output)
    world.target()
    for name in ("alpha", "beta"):
        world.package(name, summary=f"{name} one")
        world.release(name, "1.0")
        world.wheel(name, "1.0")
    writer.publish(catalog, settings.output, purging=True)
    catalog.execute("DELETE FROM cdn_purges")
    catalog.commit()
    return world


def publish(world, settings):
    return writer.publish(world.conn, settings.output, purging=True)


def test_a_new_release_owes_its_package_only(world, settings):
    world.release("alpha", "2.0")
    world.wheel("alpha", "2.0")
    result = publish(world, settings)
    assert result.changed == ["alpha"] and not result.root_changed and not result.search_changed
    assert owed(world.conn) == ["project/alpha"]


def test_a_summary_change_owes_the_search_index_not_the_root(world, settings):
    world.set("beta", summary="beta two")
    result = publish(world, settings)
    assert result.search_changed and not result.root_changed
    assert owed(world.conn) == ["project/beta", "search"]


def test_a_new_package_owes_the_root(world, settings):
    world.package("gamma")
    world.release("gamma", "1.0")
    result = publish(world, settings)
    assert result.root_changed
    assert owed(world.conn) == ["project/gamma", "root", "search"]


def test_nothing_changed_owes_nothing(world, settings):
    world.changed("alpha")
    result = publish(world, settings)
    assert result.changed == [] and owed(world.conn) == []


def test_a_forgotten_file_outlives_the_page_that_listed_it_until_the_purge(world, settings, fastly):
    world.release("alpha", "2.0")
    world.wheel("alpha", "2.0")
    publish(world, settings)
    cdn.deliver(world.conn, fastly_purger(fastly))
    wheel = settings.output / "simple/alpha/alpha-2.0-py3-none-any.whl"

    world.delete_version("alpha", "2.0")
    result = publish(world, settings)
    page = (settings.output / "simple/alpha/index.html").read_text()
    assert wheel.name not in page, "the page must be replaced first"
    assert wheel.exists(), "the file must wait for the edge to forget the page"
    assert owed(world.conn) == ["project/alpha"]

    delivery = cdn.deliver(world.conn, fastly_purger(fastly), remove=writer.remover(world.conn, settings.output))
    assert not wheel.exists() and delivery.removed == 3   # the wheel, its .metadata, its build log
    keys = [c.keys for c in fastly.calls[-2:]]
    assert keys == [["project/alpha"], ["project/alpha"]], "purged before and after the removal"
    assert owed(world.conn) == []


def test_without_a_cdn_a_forgotten_file_goes_right_after_its_page(world, settings):
    world.release("alpha", "2.0")
    world.wheel("alpha", "2.0")
    writer.publish(world.conn, settings.output)
    world.delete_version("alpha", "2.0")
    result = writer.publish(world.conn, settings.output)
    assert not (settings.output / "simple/alpha/alpha-2.0-py3-none-any.whl").exists()
    assert result.changed == ["alpha"] and owed(world.conn) == []


def test_a_file_a_published_page_still_lists_is_never_removed(world, settings):
    tree = writer.StagedTree(settings.output)
    listed = "simple/alpha/alpha-1.0-py3-none-any.whl"
    assert writer.remove_unlisted(tree, str(settings.output), [listed, listed + ".metadata"]) == 0
    assert (settings.output / listed).exists()
    assert writer.remove_unlisted(tree, str(settings.output), ["../etc/passwd", "simple/Alpha/x"]) == 0
