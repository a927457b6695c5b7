"""The Airflow Assets the DAGs share: the one place their URIs are written.

    pypi_sync ──(catalog)──▶ build_wheels, publish_index
    build_wheels ──(builds)──▶ publish_index ──(index)──▶ whoever purges the CDN

Only DAG files import this module (it imports ``airflow.sdk``); the package's logic never does.
"""

from __future__ import annotations

from airflow.sdk import Asset

# The catalog changed: new releases, deletions, enrichment (extra: what changed).
CATALOG = Asset("wheelwright://catalog")
# Builds were recorded (extra: {"packages": [...]} whose published files changed).
BUILDS = Asset("wheelwright://builds")
# The published index changed (extra: the packages rewritten, or "all").
INDEX = Asset("wheelwright://index")
