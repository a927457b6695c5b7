-- Builds that have been 'building' for longer than any build may take: their worker died or lost
-- touch. They become 'lost', which the queue does not count as tried, so the release is built again.
-- A package whose build settings raise its timeout gets that timeout and an hour before it is lost.
UPDATE builds b
SET status = 'lost', finished_at = now(), duration = now() - b.started_at,
    reason = 'no result within ' || greatest(%(older_than)s::interval, s.timeout + interval '1 hour')::text
FROM builds x LEFT JOIN build_settings s ON s.package = x.package
WHERE x.build_id = b.build_id AND b.status = 'building'
  AND b.started_at < now() - greatest(%(older_than)s::interval, s.timeout + interval '1 hour')
RETURNING b.build_id, b.package, b.version, b.target, b.abi;
