-- What the project pages show beyond files and builds: pip dependencies and download figures.
--
-- wheels.requires_dist      the wheel's own Requires-Dist lines (its METADATA, read by the index host at
--                           intake), as written there: what pip installs with it. NULL for wheels
--                           recorded before this migration (their pages fall back to PyPI's list).
-- versions.requires_dist    PyPI's Requires-Dist for a release (its JSON API's info, which describes
--                           the newest release only): the dependencies of a release not built yet.
--                           Enrichment writes it; derivation keeps it, like requires_python.
-- download_counts           per package and release: downloads in the 30 days to `through` and in all
--                           time to it, from the access logs' downloads table. Refreshed once a day, for
--                           whole days only, so the figures on a page change once a day, not every
--                           10 minutes (and a package whose figures changed is published again then).
-- download_counts_state     the last whole day the figures cover.

ALTER TABLE wheels ADD COLUMN requires_dist text[];
ALTER TABLE versions ADD COLUMN requires_dist text[];

CREATE TABLE download_counts (
    package  text   NOT NULL,
    version  text   NOT NULL,
    last_30  bigint NOT NULL,
    total    bigint NOT NULL,
    PRIMARY KEY (package, version)
);

CREATE TABLE download_counts_state (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    through      date NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now()
);
