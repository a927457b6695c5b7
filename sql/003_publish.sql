-- What the publisher remembers between runs (the published tree itself is the rest of its memory).
--
-- log_scans      failed builds whose logs the publisher has read, so each log is read once
-- log_findings   what such a log says is missing: a C header, a library for the linker, a pkg-config
--                module; the operator report maps these to the Debian package that provides them

CREATE TABLE log_scans (
    build_id   bigint PRIMARY KEY REFERENCES builds ON DELETE CASCADE,
    scanned_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE log_findings (
    build_id bigint NOT NULL REFERENCES log_scans ON DELETE CASCADE,
    kind     text   NOT NULL CHECK (kind IN ('header', 'library', 'pkg-config')),
    missing  text   NOT NULL,               -- e.g. "ffi.h", "xml2" (from -lxml2), "libffi"
    PRIMARY KEY (build_id, kind, missing)
);
CREATE INDEX log_findings_by_missing ON log_findings (kind, missing);

-- Failed builds are found by package when their package changes; this keeps that lookup cheap.
CREATE INDEX builds_failed_by_package ON builds (package) WHERE status = 'failure';
