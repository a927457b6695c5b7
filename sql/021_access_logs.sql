-- Downloads and searches, read from the web servers' access logs.
--
-- access_log_positions  how far each log (by source name: the origin's nginx, the edge's) has been read:
--                       the file's inode and the byte offset after the last whole line counted. Moved
--                       in the same transaction as the counts, so a crash re-reads nothing twice and
--                       skips nothing; a new inode at the path means the old file was rotated away.
-- downloads             per day, file, Python version and installer: how many successful GETs of a
--                       wheel. The package, ABI and platform come from the file name (parsed at the door)
-- searches              per day and package: requests for /simple/<pkg>/ that found no page (404):
--                       "wanted but not built (or deleted)"
-- access_log_refusals   lines that did not parse, per day, source and reason, with one sample line

CREATE TABLE access_log_positions (
    source      text PRIMARY KEY,
    path        text NOT NULL,
    inode       bigint NOT NULL,
    device      bigint NOT NULL,
    "offset"    bigint NOT NULL,
    lines       bigint NOT NULL DEFAULT 0,      -- lines read from this source, ever
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE downloads (
    day               date   NOT NULL,
    filename          text   NOT NULL,
    package           text   NOT NULL,          -- canonical, from the wheel's file name
    version           text   NOT NULL,
    abi_tag           text   NOT NULL,
    platform_tag      text   NOT NULL,
    python            text   NOT NULL,          -- "3.11", or "" when the client did not say
    installer         text   NOT NULL,          -- "pip", "uv", ... or "" (a browser, curl)
    installer_version text   NOT NULL,
    count             bigint NOT NULL,
    PRIMARY KEY (day, filename, python, installer, installer_version)
);
CREATE INDEX downloads_by_package ON downloads (package, day);

CREATE TABLE searches (
    day     date   NOT NULL,
    package text   NOT NULL,                    -- canonical form of what was asked for
    count   bigint NOT NULL,
    PRIMARY KEY (day, package)
);

CREATE TABLE access_log_refusals (
    day     date   NOT NULL,
    source  text   NOT NULL,
    reason  text   NOT NULL,
    count   bigint NOT NULL,
    sample  text   NOT NULL,                    -- the first such line, cut to 300 characters
    PRIMARY KEY (day, source, reason)
);
