-- What an operator (and the health checks) can tell the build queue, and what the dashboard samples.
--
-- targets.paused        an operator paused the target from the dashboard: its claim hands out nothing
--                       until resumed (builds in flight finish); the reason and who paused it are shown
-- builders              the machines that build, registered by the operator: how to reach each over SSH
--                       (an Airflow Connection, host key pinned there), its build folder and images folder,
--                       which target it builds for, and the limits beyond which it must rest
-- builder_health        the last health check of each builder; `held` (too hot, disk full, unreachable)
--                       is decided by the check and respected by the claim: a target whose registered
--                       builders are all held takes no builds until one recovers
-- builder_health_samples  the history of those checks, for trends
-- dashboard_samples     what is too costly to count on every page view (the queue of each target at
--                       PyPI's scale, the wheels' total size), sampled by a periodic task, one row per
--                       target per sample, so the page reads the latest one and draws the history

ALTER TABLE targets ADD COLUMN paused boolean NOT NULL DEFAULT false;
ALTER TABLE targets ADD COLUMN paused_reason text;
ALTER TABLE targets ADD COLUMN paused_by text;
ALTER TABLE targets ADD COLUMN paused_at timestamptz;

CREATE TABLE builders (
    name            text PRIMARY KEY,
    target          text NOT NULL REFERENCES targets (name),  -- the target whose queue it serves
    ssh_conn_id     text NOT NULL,            -- Airflow Connection (ssh) with the host key pinned
    build_dir       text NOT NULL,            -- where its builds run: free disk is measured there
    images_dir      text,                     -- its target images (freshness = newest entry's age)
    max_temp_c      real   NOT NULL DEFAULT 80,         -- a Pi throttles at 80-85 °C
    resume_temp_c   real   NOT NULL DEFAULT 70,         -- hysteresis: held until it cools below this
    min_free_bytes  bigint NOT NULL DEFAULT 2147483648,  -- 2 GiB: a big sdist's build needs room
    registered_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE builder_health (
    builder        text PRIMARY KEY REFERENCES builders ON DELETE CASCADE,
    checked_at     timestamptz NOT NULL,
    reachable      boolean NOT NULL,
    temp_c         real,                      -- NULL: the machine has no thermal zone
    load1          real,
    load5          real,
    load15         real,
    mem_total      bigint,
    mem_available  bigint,
    disk_free      bigint,
    disk_total     bigint,
    images_newest  timestamptz,               -- NULL: no images folder, or empty
    held           boolean NOT NULL DEFAULT false,
    held_reason    text,                      -- why it takes no builds, in one line
    held_since     timestamptz,
    error          text                       -- what the check itself could not do
);

CREATE TABLE builder_health_samples (
    builder     text NOT NULL REFERENCES builders ON DELETE CASCADE,
    checked_at  timestamptz NOT NULL,
    reachable   boolean NOT NULL,
    temp_c      real,
    load1       real,
    disk_free   bigint,
    held        boolean NOT NULL,
    PRIMARY KEY (builder, checked_at)
);

CREATE TABLE dashboard_samples (
    taken_at      timestamptz NOT NULL,
    target        text NOT NULL,
    queue_depth   bigint NOT NULL,
    queue_fresh   bigint NOT NULL,
    head_released timestamptz,                -- the head of the queue: its age is how long it waited
    PRIMARY KEY (taken_at, target)
);
CREATE INDEX dashboard_samples_by_target ON dashboard_samples (target, taken_at DESC);

CREATE TABLE sync_samples (
    taken_at     timestamptz PRIMARY KEY,
    serial       bigint NOT NULL,             -- ours
    pypi_serial  bigint,                      -- PyPI's, when it answered
    wheels       bigint NOT NULL,
    wheel_bytes  bigint NOT NULL
);

-- The dashboard's rankings, recomputed with each sample (each is an aggregate over weeks of rows:
-- what builders lack most, the most downloaded, the most wanted, downloads per day and by target,
-- Python and installer): one row.
CREATE TABLE dashboard_rankings (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    taken_at   timestamptz NOT NULL,
    rankings   jsonb NOT NULL             -- operate/dashboard.py: rankings()
);

-- Builds by the time they finished: the dashboard's last hour, day and week, at any catalog size.
CREATE INDEX builds_finished ON builds (finished_at) WHERE finished_at IS NOT NULL;

-- Whether a target hands out builds now: enabled, not paused, and (when builders are registered for
-- it) at least one of them not held by its health check. The claim asks this; so does the dashboard.
CREATE FUNCTION target_takes_builds(target_name text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM targets t WHERE t.name = target_name AND t.enabled AND NOT t.paused)
       AND (NOT EXISTS (SELECT 1 FROM builders b WHERE b.target = target_name)
            OR EXISTS (SELECT 1 FROM builders b
                       LEFT JOIN builder_health h ON h.builder = b.name
                       WHERE b.target = target_name AND NOT coalesce(h.held, false)))
$$;
