-- The purges to deliver now, oldest first (%(force)s ignores the back-off).
SELECT key, version, then_remove
FROM cdn_purges
WHERE %(force)s OR next_try <= now()
ORDER BY owed_since, key
LIMIT %(limit)s
