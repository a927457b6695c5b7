"""Enrichment from the JSON API: facts beside the journal's, never a deletion."""

from wheelwright.catalog import store as cat
from wheelwright.catalog.enrich import enrich
from wheelwright.pypi.client import PyPI
from wheelwright.testing.pypi_double import PyPIDouble

ROWS = [["Demo", None, 1700000000, "create", 1], ["demo", "1.0", 1700000010, "new release", 2],
        ["demo", "1.0", 1700000020, "add source file demo-1.0.tar.gz", 3],
        ["demo", "2.0", 1700000030, "new release", 4],
        ["demo", "2.0", 1700000040, "add source file demo-2.0.tar.gz", 5],
        ["demo", "2.0", 1700000050, "yank release", 6]]


def load(conn, rows):
    with conn.transaction():
        cat.ingest(conn, rows)
    cat.derive(conn)


def test_enrichment_records_summary_requires_python_yank_reason_and_file_facts(catalog):
    load(catalog, ROWS)
    with PyPIDouble(ROWS, summaries={"demo": "A demo"}, yank_reasons={("demo", "2.0"): "broken build"},
                    requires_python={("demo", "2.0"): ">=3.9"}) as double:
        before = catalog.execute("SELECT change_seq FROM packages").fetchone()[0]
        result = enrich(catalog, lambda: PyPI(double.xmlrpc_url, sleep=lambda s: None))
    assert result.enriched == ["demo"]
    summary, seq, enriched_seq = catalog.execute(
        "SELECT summary, change_seq, enriched_seq FROM packages").fetchone()
    assert summary == "A demo" and seq > before and enriched_seq == seq, \
        "enrichment is a visible change and is not due again"
    assert catalog.execute("SELECT version, requires_python, yanked_reason FROM versions ORDER BY rank"
                           ).fetchall() == [("1.0", None, None), ("2.0", ">=3.9", "broken build")]
    files = catalog.execute("SELECT filename, length(sha256), size > 0, upload_time IS NOT NULL "
                            "FROM source_files ORDER BY filename").fetchall()
    assert files == [("demo-1.0.tar.gz", 64, True, True), ("demo-2.0.tar.gz", 64, True, True)]
    assert enrich(catalog, lambda: None).enriched == [], "nothing is due any more"


def test_the_newest_release_keeps_pypis_requires_dist_and_bad_lines_are_left_out(catalog):
    load(catalog, ROWS[:5])
    lines = ["numpy>=1.20", 'pytest ; extra == "test"', "not a requirement !!", "x" * 2000]
    with PyPIDouble(ROWS[:5], requires_dist={("demo", "2.0"): lines}) as double:
        enrich(catalog, lambda: PyPI(double.xmlrpc_url, sleep=lambda s: None))
    assert catalog.execute("SELECT version, requires_dist FROM versions ORDER BY rank").fetchall() == [
        ("1.0", None), ("2.0", ["numpy>=1.20", 'pytest; extra == "test"'])], \
        "PyPI describes its newest release only; a line that is not PEP 508 never reaches a page"


def test_a_404_from_the_json_api_deletes_nothing(catalog):
    load(catalog, ROWS)
    with PyPIDouble([]) as empty:   # PyPI knows nothing of demo
        result = enrich(catalog, lambda: PyPI(empty.xmlrpc_url, sleep=lambda s: None))
    assert result.missing == ["demo"]
    assert catalog.execute("SELECT present FROM packages").fetchone() == (True,)
    assert catalog.execute("SELECT count(*) FROM versions").fetchone()[0] == 2
