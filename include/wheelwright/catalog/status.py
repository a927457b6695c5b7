"""How far behind PyPI we are, and how big the catalog is: one read-only snapshot for people and DAGs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psycopg

from wheelwright.catalog import db


@dataclass
class Status:
    serial: int
    pypi_serial: int | None
    events: int
    rejected: int
    unknown_actions: int
    pending_packages: int
    packages: int
    deleted_packages: int
    versions: int
    source_files: int
    enrichment_due: int
    change_seq: int
    purges_owed: int = 0            # surrogate keys the CDN has not confirmed purging yet
    purge_lag_seconds: float = 0.0  # ... and how long the oldest has waited

    @property
    def lag(self) -> int | None:
        return None if self.pypi_serial is None else max(0, self.pypi_serial - self.serial)

    def as_dict(self) -> dict:
        return asdict(self) | {"lag": self.lag}


def read_status(conn: psycopg.Connection, pypi_serial: int | None = None) -> Status:
    row = conn.execute(db.query("status")).fetchone()
    return Status(row[0], pypi_serial, *row[1:])
