-- Failed builds of the given packages (all packages when %(packages)s is NULL) whose logs nobody has
-- read yet, with the reason the build row gives.
SELECT b.build_id, b.log_path, b.reason
  FROM builds b
 WHERE b.status = 'failure'
   AND b.log_path IS NOT NULL
   AND (%(packages)s::text[] IS NULL OR b.package = ANY(%(packages)s::text[]))
   AND NOT EXISTS (SELECT 1 FROM log_scans s WHERE s.build_id = b.build_id)
