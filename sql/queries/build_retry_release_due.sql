-- Builds waiting to be retried whose time has come become 'lost': the build queue does not count a lost
-- build as tried, so their releases are claimed again. Their reason (why they were retried) stays.
UPDATE builds
   SET status = 'lost'
 WHERE status = 'retry' AND not_before <= now()
RETURNING build_id, package, version, target;
