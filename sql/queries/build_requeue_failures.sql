-- An operator re-queues the failures of a target (after adding a -dev package to its image, say): every
-- release whose build on the target failed, or waits to retry, is forgotten there with its earlier
-- transient attempts, so the build queue offers it to the target again, and its attempts count afresh.
WITH failed AS (
    SELECT DISTINCT package, version
      FROM builds
     WHERE target = %(target)s AND status IN ('failure', 'retry')
       AND (%(package)s::text IS NULL OR package = %(package)s)
)
DELETE FROM builds b
 USING failed f
 WHERE b.package = f.package AND b.version = f.version AND b.target = %(target)s
   AND (b.status IN ('failure', 'retry') OR (b.status = 'lost' AND b.transient))
RETURNING b.package, b.version, b.status;
