-- What builders lack most: the files failed builds' logs say were missing, by how many builds of
-- visible releases they failed (the operator report of publish/reports.py, ranked and cut short).
SELECT f.kind, f.missing, count(DISTINCT b.build_id) AS builds,
       (array_agg(b.package || ' ' || b.version ORDER BY b.build_id DESC))[1:3]
FROM log_findings f
JOIN builds b ON b.build_id = f.build_id
JOIN packages p ON p.package = b.package
JOIN versions v ON v.package = b.package AND v.version = b.version
WHERE p.present AND NOT p.quarantined AND NOT v.quarantined
GROUP BY f.kind, f.missing
ORDER BY count(DISTINCT b.build_id) DESC, f.kind, f.missing
LIMIT %(limit)s;
