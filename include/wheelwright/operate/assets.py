"""The Airflow Assets the DAGs share: the one place their URIs are written.

    pypi_sync ──(catalog)──▶ build_wheels, publish_index
    build_wheels ──(builds)──▶ publish_index ──(index)──▶ whoever purges the CDN
    build_wheels ──(build backlog)──▶ build_wheels (its next run, at once)

Only DAG files import this module (it imports ``airflow.sdk``); the package's logic never does.
"""

from __future__ import annotations

from airflow.sdk import Asset

# The catalog changed: new releases, deletions, enrichment (extra: what changed).
CATALOG = Asset("wheelwright://catalog")
# A build_wheels run left builds waiting in a target's queue (extra: {"targets": [...]}): the next
# run claims them at once instead of at the next catalog change or tick of the clock.
BUILD_BACKLOG = Asset("wheelwright://build-backlog")
# Builds were recorded (extra: {"packages": [...]} whose published files changed).
BUILDS = Asset("wheelwright://builds")
# The published index changed (extra: the packages rewritten, or "all").
INDEX = Asset("wheelwright://index")
