-- The latest failed builds, with their reasons and logs.
SELECT b.build_id, b.package, coalesce(p.display_name, b.package), b.version, b.target, b.builder,
       b.finished_at, b.reason, b.log_path
FROM builds b
LEFT JOIN packages p ON p.package = b.package
WHERE b.finished_at IS NOT NULL AND b.status = 'failure'
ORDER BY b.finished_at DESC, b.build_id DESC
LIMIT %(limit)s;
