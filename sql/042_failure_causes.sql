-- Every failed build's cause, not only a missing file: what reports/ explains for each failure.
--
-- log_findings.kind gains
--   'tool'   a build tool its setup ran and did not find (curl-config, pg_config, mysql_config), mapped
--            like headers to the Debian package that provides it (data/missing-files.tsv)
--   'cause'  why the build failed, in publish/reports.py's words ("needs a newer Rust", "timed out",
--            "missing header", "does not load", ...): one per scanned failure, `missing` holding
--            "<cause>: <detail>"
ALTER TABLE log_findings DROP CONSTRAINT log_findings_kind_check;
ALTER TABLE log_findings ADD CONSTRAINT log_findings_kind_check
    CHECK (kind IN ('header', 'library', 'pkg-config', 'tool', 'cause'));
