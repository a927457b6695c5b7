-- Staging tables for the folded state of the packages derived in this transaction; their names and
-- versions in the catalog's collation (migration 007), so the catalog's keys serve the joins.
CREATE TEMP TABLE IF NOT EXISTS derive_packages (
    package text COLLATE "C" PRIMARY KEY, display_name text COLLATE "C", present boolean,
    born_serial bigint, quarantined boolean
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS derive_aliases (
    package text COLLATE "C", alias text COLLATE "C", last_ts bigint, last_serial bigint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS derive_versions (
    package text COLLATE "C", version text COLLATE "C", born_serial bigint, released bigint,
    rank integer, valid boolean, prerelease boolean, yanked boolean, quarantined boolean,
    has_sdist boolean,
    PRIMARY KEY (package, version)
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS derive_files (
    package text COLLATE "C", filename text COLLATE "C", version text COLLATE "C",
    pyver text COLLATE "C", born_serial bigint, uploaded bigint,
    PRIMARY KEY (package, filename)
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS derive_unchanged (
    package text COLLATE "C" PRIMARY KEY
) ON COMMIT DELETE ROWS;
