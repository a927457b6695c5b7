-- The latest final failures of the whole index, newest first, for feeds/failures.atom: of projects
-- that are published (present, not quarantined, not taken down) and releases that are shown. Walks
-- builds_finished backwards and stops after %(limit)s rows.
SELECT b.build_id, b.package, p.display_name, b.version, b.target, b.reason,
       to_char(b.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), b.log_path
  FROM builds b
  JOIN packages p ON p.package = b.package
  JOIN versions v ON v.package = b.package AND v.version = b.version
 WHERE b.status = 'failure' AND b.finished_at IS NOT NULL
   AND p.present AND NOT p.quarantined AND NOT v.quarantined
   AND NOT EXISTS (SELECT 1 FROM takedowns d WHERE d.package = b.package AND d.version IS NULL)
 ORDER BY b.finished_at DESC, b.build_id DESC
 LIMIT %(limit)s;
