-- The next releases a target would build, without claiming them (for status, the dashboard and the
-- project pages): its fresh work (%(backfill)s false) or its backfilled history (true), newest first,
-- as the claim takes them. With `since`, only releases from then on: an index range, cheap however big
-- the catalog (the caller widens it while the head is short; see queue.queue_head).
SELECT package, version, released, fresh, backfill
FROM build_queue(%(target)s, %(fresh)s, %(since)s)
WHERE backfill = %(backfill)s
ORDER BY released DESC, package, version
LIMIT %(limit)s;
