-- Targets get names of their own, and the build queue becomes a function of the catalog.
--
-- Two targets may share an ABI on different platforms (cp311 on a Pi's armv7l and on an x86_64 build
-- machine), so the ABI cannot be a target's key: a target is known by its name, which is also the
-- default name of its Celery queue. builds.abi stays the ABI tag the build was for (what the project
-- page shows); builds.target says which target made it. Two targets with the same ABI and platform
-- would make wheels of the same file names, so that pair is unique too.

ALTER TABLE builds DROP CONSTRAINT builds_abi_fkey;
ALTER TABLE targets DROP CONSTRAINT targets_pkey;

ALTER TABLE targets ADD COLUMN name text;
ALTER TABLE targets ADD COLUMN queue text;
UPDATE targets SET name = abi, queue = abi;
ALTER TABLE targets ALTER COLUMN name SET NOT NULL, ALTER COLUMN queue SET NOT NULL;
ALTER TABLE targets ADD PRIMARY KEY (name);
ALTER TABLE targets ADD CONSTRAINT targets_tags_unique UNIQUE (abi, platform);
-- one worker pool per enabled target: two enabled targets on one queue would build for each other
CREATE UNIQUE INDEX targets_queue_unique ON targets (queue) WHERE enabled;

ALTER TABLE builds ADD COLUMN target text;
UPDATE builds SET target = abi;
ALTER TABLE builds ALTER COLUMN target SET NOT NULL;
ALTER TABLE builds ADD CONSTRAINT builds_target_fkey FOREIGN KEY (target) REFERENCES targets (name);
CREATE INDEX builds_by_target ON builds (target, status);
-- at most one build of a version in flight per target, whoever claims it
CREATE UNIQUE INDEX builds_one_in_flight ON builds (package, version, target) WHERE status = 'building';
CREATE INDEX builds_in_flight_since ON builds (started_at) WHERE status = 'building';
CREATE INDEX versions_newest_first ON versions (released DESC, package, version);
CREATE INDEX wheels_pure ON wheels (package, version) WHERE abi_tag = 'none' AND platform_tag = 'any';

-- The build queue of one target: the releases it should build next, best first.
--
-- A release is buildable when it has an sdist and neither it nor its package is deleted, quarantined
-- or skipped. It waits for a target when that target has not tried it yet (a lost build was never
-- tried), no target has built a pure wheel of it (one serves every target), and every earlier enabled
-- target (numeric ABI order) has finished with it: failed, or built a binary wheel for itself only.
-- Newest first: a fresh upload (released within `fresh_window`, flagged for status displays) is at the
-- head of the queue, so it is built within one scheduling interval however long the backlog is, and
-- the backlog follows newest first too (a Pi user most likely wants recent releases). Ordering by
-- released alone lets a claim use versions_newest_first. `since` limits the queue to releases from
-- then on: the claim asks in widening windows (a day, a month, a year: index ranges, fast however big
-- the catalog) and only then for the whole backlog (a pass over every release).
CREATE FUNCTION build_queue(target_name text, fresh_window interval, since timestamptz DEFAULT NULL)
RETURNS TABLE (package text, version text, released timestamptz, fresh boolean)
LANGUAGE sql STABLE AS $$
    SELECT v.package, v.version, v.released, v.released >= now() - fresh_window AS fresh
    FROM versions v
    JOIN packages p ON p.package = v.package
    WHERE EXISTS (SELECT 1 FROM targets t WHERE t.name = target_name AND t.enabled)
      AND (since IS NULL OR v.released >= since)
      AND v.has_sdist AND NOT v.quarantined AND v.skip_reason IS NULL
      AND p.present AND NOT p.quarantined AND p.skip_reason IS NULL
      AND NOT EXISTS (SELECT 1 FROM builds b
                      WHERE b.package = v.package AND b.version = v.version
                        AND b.target = target_name AND b.status <> 'lost')
      AND NOT EXISTS (SELECT 1 FROM wheels w
                      WHERE w.package = v.package AND w.version = v.version
                        AND w.abi_tag = 'none' AND w.platform_tag = 'any')
      AND NOT EXISTS (SELECT 1 FROM targets e JOIN targets t ON t.name = target_name
                      WHERE e.enabled AND (e.position, e.name) < (t.position, t.name)
                        AND NOT EXISTS (SELECT 1 FROM builds b
                                        WHERE b.package = v.package AND b.version = v.version
                                          AND b.target = e.name AND b.status IN ('success', 'failure')))
    ORDER BY v.released DESC, v.package, v.version
$$;
