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


# -- what a hostile mirror (or proxy) could send: parsed at the door, never a crash for everyone ----------

HOSTILE = {
    "info": {"summary": "evil\x1b]0;owned\x07 summary"},
    "releases": {
        "1.0": [{"filename": "demo-1.0.tar.gz", "digests": {"sha256": "not-a-hash"}, "size": "huge",
                 "url": "file:///etc/passwd", "upload_time_iso_8601": "yesterday",
                 "requires_python": ">=3.8\x00", "yanked": False}],
        "2.0": [{"filename": "demo-2.0.tar.gz", "digests": {"sha256": "a" * 64}, "size": 1234,
                 "url": "https://files.example/demo-2.0.tar.gz", "upload_time_iso_8601": "2024-01-02T03:04:05Z",
                 "requires_python": ">=3.9", "yanked": True, "yanked_reason": "x" * 5000},
                "not an entry", {"filename": "../../etc/passwd", "size": 1}],
        "3.0\x00": [],
    },
}


class _Mirror:
    """A real HTTP server answering the JSON API with whatever documents a test gives it."""

    def __init__(self, documents: dict):
        import http.server
        import json as json_
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.split("/")[2] if self.path.startswith("/pypi/") else ""
                if name not in documents:
                    self.send_error(404)
                    return
                body = json_.dumps(documents[name]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.xmlrpc_url = f"http://127.0.0.1:{self.server.server_address[1]}/pypi"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_a_hostile_json_document_is_read_into_our_types_and_blocks_no_one(catalog):
    other = [["Other", None, 1700000100, "create", 7], ["other", "1.0", 1700000110, "new release", 8],
             ["worse", None, 1700000120, "create", 9], ["worse", "1.0", 1700000130, "new release", 10]]
    load(catalog, ROWS + other)
    documents = {"demo": HOSTILE, "other": {"info": {"summary": "fine"}, "releases": {"1.0": []}},
                 "worse": ["not", "an", "object"]}
    with _Mirror(documents) as mirror:
        result = enrich(catalog, lambda: PyPI(mirror.xmlrpc_url, sleep=lambda s: None))
    assert sorted(result.enriched) == ["demo", "other"] and result.failed == ["worse"]
    assert catalog.execute("SELECT package, summary FROM packages ORDER BY package").fetchall() == \
        [("demo", None), ("other", "fine"), ("worse", None)], "a summary with a terminal escape is not kept"
    assert catalog.execute("SELECT version, requires_python, yanked_reason FROM versions WHERE package = 'demo' "
                           "ORDER BY rank").fetchall() == [("1.0", None, None), ("2.0", ">=3.9", None)]
    assert catalog.execute("SELECT filename, sha256, size, url, upload_time IS NOT NULL FROM source_files "
                           "ORDER BY filename").fetchall() == [
        ("demo-1.0.tar.gz", None, None, None, False),
        ("demo-2.0.tar.gz", "a" * 64, 1234, "https://files.example/demo-2.0.tar.gz", True)]
