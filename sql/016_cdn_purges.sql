-- What the CDN still owes: the purge mark.
--
-- The publisher records here, in the same transaction that moves its own mark, the surrogate keys of
-- everything it changed (project/<canon> per package, root, search, reports) and the files it may
-- remove once the edge has forgotten the page that listed them. The purger deletes a row only after
-- the CDN confirmed the purge (and the row was not re-owed meanwhile: ``version``), so a crash or an
-- outage of the CDN's API loses nothing; the next publish or `wheelwright purge` delivers it.
CREATE SEQUENCE cdn_purge_version;

CREATE TABLE cdn_purges (
    key         text PRIMARY KEY,                      -- a surrogate key: project/<canon>, root, all, ...
    owed_since  timestamptz NOT NULL DEFAULT now(),     -- the oldest change this purge stands for
    version     bigint NOT NULL DEFAULT nextval('cdn_purge_version'),  -- bumped whenever re-owed
    then_remove text[] NOT NULL DEFAULT '{}',          -- tree paths to unlink once the key is purged
    attempts    integer NOT NULL DEFAULT 0,             -- failed deliveries since it was owed
    next_try    timestamptz NOT NULL DEFAULT now(),     -- back-off: not before this (a forced purge ignores it)
    last_error  text
);
