-- A target's history enters its queue only by backfill, and fresh work goes before backfilled work.
--
-- targets.enabled_at   when the target was enabled (a retired target enabled again starts afresh).
--                      Its queue holds the releases first uploaded from then on; older releases wait
--                      only once the rebuild_history DAG admitted their month for this target, so a new
--                      target (a new Debian release, a new Python) does not put all of PyPI's history in
--                      line at once, and the operator chooses how far back to go. Targets that existed
--                      before this migration, and the targets of a new installation (the first ever
--                      mirrored), have '-infinity': their whole history is their queue, as before.
-- build_backfill       the releases older than enabled_at that a backfill admitted to a target's queue.
--                      A row stays while its release waits (a lost build re-queues it) and is pruned
--                      once the target finished the release; re-admitting it is a no-op.
--
-- build_queue() gains a column `backfill`: false for releases uploaded since enabled_at (fresh work,
-- claimed first), true for admitted history (claimed in the capacity fresh work leaves).

ALTER TABLE targets ADD COLUMN enabled_at timestamptz NOT NULL DEFAULT '-infinity';

CREATE TABLE build_backfill (
    target    text NOT NULL REFERENCES targets (name),
    package   text NOT NULL,
    version   text NOT NULL,
    released  timestamptz NOT NULL,          -- versions.released, copied: the claim's order
    queued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, package, version),
    FOREIGN KEY (package, version) REFERENCES versions ON DELETE CASCADE
);
CREATE INDEX build_backfill_newest_first ON build_backfill (target, released DESC, package, version);
-- the earlier-target check of build_queue asks "did target e admit this release?"
CREATE INDEX build_backfill_by_version ON build_backfill (package, version);

DROP FUNCTION build_queue(text, interval, timestamptz);

-- The build queue of one target: the releases it should build next, best first.
--
-- A release is buildable when it has an sdist and neither it nor its package is deleted, quarantined
-- or skipped. It waits for a target when it is in the target's scope (uploaded since the target was
-- enabled, or admitted by a backfill), that target has not tried it yet (a lost build was never
-- tried), no target has built a pure wheel of it (one serves every target), and every earlier enabled
-- target (numeric ABI order) whose scope holds it has finished with it: failed, or built a binary
-- wheel for itself only. An earlier target that never will (the release is older than it and not
-- backfilled for it) holds nothing back.
-- Order: fresh work first (not backfill), then backfilled history; each newest first (`fresh` flags a
-- release uploaded within `fresh_window`, for status displays). `since` limits the queue to releases
-- from then on: the claim asks in widening windows (index ranges, fast however big the catalog).
CREATE FUNCTION build_queue(target_name text, fresh_window interval, since timestamptz DEFAULT NULL)
RETURNS TABLE (package text, version text, released timestamptz, fresh boolean, backfill boolean)
LANGUAGE sql STABLE AS $$
    SELECT v.package, v.version, v.released, v.released >= now() - fresh_window AS fresh, q.backfill
    FROM (SELECT v.package, v.version, false AS backfill
          FROM versions v JOIN targets t ON t.name = target_name AND t.enabled
          WHERE v.released >= t.enabled_at AND (since IS NULL OR v.released >= since)
          UNION ALL
          SELECT bf.package, bf.version, true
          FROM build_backfill bf JOIN targets t ON t.name = bf.target AND t.enabled
          WHERE bf.target = target_name AND bf.released < t.enabled_at
            AND (since IS NULL OR bf.released >= since)) AS q
    JOIN versions v ON v.package = q.package AND v.version = q.version
    JOIN packages p ON p.package = v.package
    WHERE v.has_sdist AND NOT v.quarantined AND v.skip_reason IS NULL
      AND p.present AND NOT p.quarantined AND p.skip_reason IS NULL
      AND NOT EXISTS (SELECT 1 FROM builds b
                      WHERE b.package = v.package AND b.version = v.version
                        AND b.target = target_name AND b.status <> 'lost')
      AND NOT EXISTS (SELECT 1 FROM wheels w
                      WHERE w.package = v.package AND w.version = v.version
                        AND w.abi_tag = 'none' AND w.platform_tag = 'any')
      AND NOT EXISTS (SELECT 1 FROM targets e JOIN targets t ON t.name = target_name
                      WHERE e.enabled AND (e.position, e.name) < (t.position, t.name)
                        AND (v.released >= e.enabled_at
                             OR EXISTS (SELECT 1 FROM build_backfill bf
                                        WHERE bf.target = e.name AND bf.package = v.package
                                          AND bf.version = v.version))
                        AND NOT EXISTS (SELECT 1 FROM builds b
                                        WHERE b.package = v.package AND b.version = v.version
                                          AND b.target = e.name AND b.status IN ('success', 'failure')))
    ORDER BY q.backfill, v.released DESC, v.package, v.version
$$;
