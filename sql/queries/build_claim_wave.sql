-- Claim the head of a target's fresh work (releases uploaded since it was enabled): one 'building'
-- row per release, returned to the caller. With `since`, only releases from then on (an index range:
-- cheap however big the catalog, when the window is short); with a NULL `since`, all fresh work.
-- Backfilled history is claimed by build_claim_backfill, in the capacity this leaves.
-- A paused target, or one whose registered builders are all held by their health check, claims
-- nothing (target_takes_builds, migration 020).
-- The caller holds the target's claim lock, so two schedulers never claim the same release; the
-- unique index on in-flight builds is the last word if anything else races.
INSERT INTO builds (package, version, abi, target, status)
SELECT q.package, q.version, t.abi, t.name, 'building'
FROM build_queue(%(target)s, %(fresh)s, %(since)s) AS q
CROSS JOIN targets t
WHERE t.name = %(target)s AND NOT q.backfill
  AND target_takes_builds(t.name)     -- paused by an operator, or every builder held (020)
ORDER BY q.released DESC, q.package, q.version
LIMIT %(limit)s
ON CONFLICT (package, version, target) WHERE status = 'building' DO NOTHING
RETURNING build_id, package, version, target, abi;
