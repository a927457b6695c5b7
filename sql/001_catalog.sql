-- The catalog: PyPI's changelog journal and what it derives, package by package.
--
-- journal            every changelog row ever received, keyed by serial (append-only, re-delivery is a no-op)
-- journal_rejects    rows PyPI sent that we could not read, with the reason (visible in `wheelwright status`)
-- pending_packages   packages whose journal changed and whose derived rows are not yet re-folded
-- packages/aliases/versions/source_files   the derived state: a function of the journal alone, plus
--                    enrichment columns from PyPI's JSON API and operator decisions that derivation keeps
-- change_seq         every change to a package's visible state takes the next number, so a consumer can
--                    ask "what changed since my mark" (consumer_marks) and never miss or repeat work

CREATE TABLE sync_state (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_serial bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sync_state DEFAULT VALUES;

CREATE TABLE journal (
    serial        bigint PRIMARY KEY,
    name          text   NOT NULL,          -- the project name as PyPI spelled it
    package       text   NOT NULL,          -- its canonical form
    version       text,
    ts            bigint NOT NULL,          -- unix seconds, as PyPI reports it
    action        text   NOT NULL,
    kind          text   NOT NULL,          -- wheelwright.events.Kind
    other_package text,                     -- "rename from": the canonical old name
    received_at   timestamptz NOT NULL DEFAULT now()
);
-- Dropped during a bulk replay (random-order index inserts cost more than the rest of a replay) and
-- rebuilt once at its end: see catalog.ensure_bulk_indexes.
CREATE INDEX journal_history ON journal (package, ts, serial);
CREATE INDEX journal_renames ON journal (other_package) WHERE other_package IS NOT NULL;
CREATE INDEX journal_kinds ON journal (kind) WHERE kind = 'unknown';

CREATE TABLE journal_rejects (
    reject_id   bigserial PRIMARY KEY,
    serial      bigint,
    raw         text NOT NULL,
    reason      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
-- The same bad row delivered again is recorded once.
CREATE UNIQUE INDEX journal_rejects_once ON journal_rejects (coalesce(serial, -1), md5(raw));

CREATE TABLE pending_packages (
    package text PRIMARY KEY
);

CREATE SEQUENCE change_seq;

CREATE TABLE packages (
    package      text PRIMARY KEY,
    display_name text    NOT NULL,
    present      boolean NOT NULL,          -- false: deleted on PyPI (kept as a tombstone for consumers)
    born_serial  bigint,                    -- the serial that started the current life
    quarantined  boolean NOT NULL DEFAULT false,
    state_hash   text    NOT NULL,          -- fingerprint of the folded journal state
    change_seq   bigint  NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    summary      text,                      -- JSON API
    enriched_seq bigint  NOT NULL DEFAULT 0,  -- change_seq at which the JSON API was last read
    skip_reason  text                       -- operator: never build this package
);
CREATE INDEX packages_changes ON packages (change_seq);
CREATE INDEX packages_to_enrich ON packages (change_seq) WHERE present AND enriched_seq < change_seq;

CREATE TABLE aliases (
    package     text   NOT NULL,
    alias       text   NOT NULL,
    last_ts     bigint NOT NULL,
    last_serial bigint NOT NULL,
    PRIMARY KEY (package, alias)
);

-- Rows of versions, source_files and aliases are written only by derivation, which keeps them
-- consistent with packages itself; per-row foreign-key checks would cost as much as the inserts.
CREATE TABLE versions (
    package         text    NOT NULL,
    version         text    NOT NULL,
    born_serial     bigint  NOT NULL,       -- a new life of the same version string gets a new number
    released        timestamptz NOT NULL,
    rank            integer NOT NULL,       -- 1 = oldest; PEP 440 order, invalid versions last
    valid           boolean NOT NULL,       -- a PEP 440 version
    prerelease      boolean NOT NULL,
    yanked          boolean NOT NULL,
    quarantined     boolean NOT NULL,
    has_sdist       boolean NOT NULL,
    yanked_reason   text,                   -- JSON API
    requires_python text,                   -- JSON API
    skip_reason     text,                   -- operator: never build this version
    PRIMARY KEY (package, version)
);

CREATE TABLE source_files (
    package     text   NOT NULL,
    filename    text   NOT NULL,
    version     text   NOT NULL,
    pyver       text   NOT NULL,            -- "source" for an sdist
    born_serial bigint NOT NULL,
    uploaded    timestamptz NOT NULL,
    sha256      text,                       -- JSON API
    size        bigint,                     -- JSON API
    url         text,                       -- JSON API
    upload_time timestamptz,                -- JSON API (the journal's timestamp is in "uploaded")
    -- No foreign key to versions: derivation deletes a version's files itself, and a per-row
    -- key check would double the cost of replaying PyPI's history.
    PRIMARY KEY (package, filename)
);

CREATE TABLE consumer_marks (
    consumer   text PRIMARY KEY,
    mark       bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
