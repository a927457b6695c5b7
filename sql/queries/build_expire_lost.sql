-- Builds that have been 'building' for longer than any build may take: their worker died or lost
-- touch. They become 'lost', which the queue does not count as tried, so the release is built again.
UPDATE builds
SET status = 'lost', finished_at = now(), duration = now() - started_at,
    reason = 'no result within ' || %(older_than)s::interval::text
WHERE status = 'building' AND started_at < now() - %(older_than)s::interval
RETURNING build_id, package, version, target, abi;
