-- Staging tables for the folded state of the packages derived in this transaction.
CREATE TEMP TABLE IF NOT EXISTS derive_packages (
    package text PRIMARY KEY, display_name text, present boolean, born_serial bigint,
    quarantined boolean
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS derive_aliases (
    package text, alias text, last_ts bigint, last_serial bigint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS derive_versions (
    package text, version text, born_serial bigint, released bigint, rank integer, valid boolean,
    prerelease boolean, yanked boolean, quarantined boolean, has_sdist boolean,
    PRIMARY KEY (package, version)
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS derive_files (
    package text, filename text, version text, pyver text, born_serial bigint, uploaded bigint,
    PRIMARY KEY (package, filename)
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS derive_unchanged (
    package text PRIMARY KEY
) ON COMMIT DELETE ROWS;
