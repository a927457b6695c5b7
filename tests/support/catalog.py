"""The catalog as tests see it: DSNs of test databases, snapshots and keys to compare."""

from __future__ import annotations

from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO = Path(__file__).resolve().parents[2]


def database_dsn(server_dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(server_dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


def catalog_snapshot(conn) -> dict:
    """Everything the journal decides, as plain sorted data (change numbers and times left out)."""
    return {
        "packages": conn.execute(
            "SELECT package, display_name, present, born_serial, quarantined FROM packages "
            "ORDER BY package").fetchall(),
        "aliases": conn.execute("SELECT package, alias, last_ts, last_serial FROM aliases "
                                "ORDER BY package, alias").fetchall(),
        "versions": conn.execute(
            "SELECT package, version, born_serial, released, rank, valid, prerelease, yanked, "
            "quarantined, has_sdist FROM versions ORDER BY package, version").fetchall(),
        "files": conn.execute("SELECT package, filename, version, pyver, born_serial, uploaded "
                              "FROM source_files ORDER BY package, filename").fetchall(),
    }


def schema_keys(conn) -> list[tuple]:
    """Every key, foreign key and index of the catalog, as its definition."""
    return conn.execute(
        "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype IN ('p', 'u', 'f', 'x') AND connamespace = 'public'::regnamespace "
        "UNION ALL SELECT indrelid::regclass::text, indexrelid::regclass::text, pg_get_indexdef(indexrelid) "
        "FROM pg_index JOIN pg_class ON pg_class.oid = indexrelid "
        "WHERE relnamespace = 'public'::regnamespace ORDER BY 1, 2, 3").fetchall()
