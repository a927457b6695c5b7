-- Claim the head of a target's backfilled history (releases older than the target that a
-- rebuild_history run admitted), newest first: only after fresh work, in the capacity it left.
-- The caller holds the target's claim lock (see build_claim_wave).
INSERT INTO builds (package, version, abi, target, status)
SELECT q.package, q.version, t.abi, t.name, 'building'
FROM build_queue(%(target)s, %(fresh)s) AS q
CROSS JOIN targets t
WHERE t.name = %(target)s AND q.backfill
  AND target_takes_builds(t.name)     -- paused by an operator, or every builder held (020)
ORDER BY q.released DESC, q.package, q.version
LIMIT %(limit)s
ON CONFLICT (package, version, target) WHERE status = 'building' DO NOTHING
RETURNING build_id, package, version, target, abi;
