-- The builds that published wheels most recently, for the home page: package, display name, version,
-- target, when it finished, how many wheels.
SELECT b.package, p.display_name, b.version, b.target, b.finished_at,
       (SELECT count(*) FROM wheels w WHERE w.build_id = b.build_id)
FROM builds b
JOIN packages p ON p.package = b.package
JOIN versions v ON v.package = b.package AND v.version = b.version
WHERE b.finished_at IS NOT NULL AND b.status = 'success'
  AND p.present AND NOT p.quarantined AND NOT v.quarantined
  AND EXISTS (SELECT 1 FROM wheels w WHERE w.build_id = b.build_id)
ORDER BY b.finished_at DESC, b.build_id DESC
LIMIT %(limit)s;
