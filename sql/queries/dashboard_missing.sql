-- What builders lack most now: the files that failed builds of the last 30 days said were missing,
-- by how many builds of visible releases they failed (publish/reports.py keeps the all-time report;
-- this is its recent part, an index range over builds.finished_at).
SELECT f.kind, f.missing, count(DISTINCT b.build_id) AS builds,
       (array_agg(b.package || ' ' || b.version ORDER BY b.build_id DESC))[1:3]
FROM builds b
JOIN log_findings f ON f.build_id = b.build_id
JOIN packages p ON p.package = b.package
JOIN versions v ON v.package = b.package AND v.version = b.version
WHERE b.finished_at >= now() - interval '30 days' AND b.status = 'failure' AND f.kind <> 'cause'
  AND p.present AND NOT p.quarantined AND NOT v.quarantined
GROUP BY f.kind, f.missing
ORDER BY count(DISTINCT b.build_id) DESC, f.kind, f.missing
LIMIT %(limit)s;
