-- The next releases a target would build, without claiming them (for status and the dashboard):
-- fresh work first, then backfilled history, as the claim takes them.
SELECT package, version, released, fresh, backfill
FROM build_queue(%(target)s, %(fresh)s)
ORDER BY backfill, released DESC, package, version
LIMIT %(limit)s;
