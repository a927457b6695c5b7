-- Build targets, builds and the wheels they produced.
--
-- targets     mirrored from the targets config file; a retired target (enabled = false) keeps its wheels
-- builds      one attempt to build one version for one target; rows go with the version (a deleted or
--             re-created version starts clean)
-- wheels      files a successful build produced and the index host accepted
-- wheel_dependencies   what a wheel needs at run time: apt packages, or libraries no package owns

CREATE TABLE targets (
    abi       text PRIMARY KEY,             -- e.g. cp311; also the Celery queue's name
    platform  text    NOT NULL,             -- e.g. linux_armv7l
    distro    text    NOT NULL,             -- e.g. bookworm
    enabled   boolean NOT NULL DEFAULT true,
    position  integer NOT NULL              -- numeric ABI order: cp39 < cp311 < cp313
);

CREATE TABLE builds (
    build_id    bigserial PRIMARY KEY,
    package     text    NOT NULL,
    version     text    NOT NULL,
    abi         text    NOT NULL REFERENCES targets,
    status      text    NOT NULL CHECK (status IN ('building', 'success', 'failure', 'lost')),
    builder     text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    duration    interval,
    log_path    text,                       -- relative to the published tree: logs/NNNN/NNNN/NNNN.txt.gz
    reason      text,                       -- why a build failed or was refused, in one line
    FOREIGN KEY (package, version) REFERENCES versions ON DELETE CASCADE
);
CREATE INDEX builds_by_version ON builds (package, version);
CREATE INDEX builds_by_abi ON builds (abi, status);

CREATE TABLE wheels (
    filename         text PRIMARY KEY,
    build_id         bigint NOT NULL REFERENCES builds ON DELETE CASCADE,
    package          text   NOT NULL,
    version          text   NOT NULL,
    size             bigint NOT NULL,
    sha256           text   NOT NULL,
    python_tag       text   NOT NULL,
    abi_tag          text   NOT NULL,
    platform_tag     text   NOT NULL,
    requires_python  text,
    metadata_sha256  text,                  -- PEP 658: sha256 of <wheel>.metadata, when published
    uploaded         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wheels_by_version ON wheels (package, version);

CREATE TABLE wheel_dependencies (
    filename   text NOT NULL REFERENCES wheels ON DELETE CASCADE,
    tool       text NOT NULL CHECK (tool IN ('apt', 'unowned')),  -- unowned: a library no apt package owns
    dependency text NOT NULL,
    PRIMARY KEY (filename, tool, dependency)
);
