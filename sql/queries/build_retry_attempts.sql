-- Which attempt a transient failure of this build is: the release's earlier transient builds on the
-- same target, plus this one; and the database's clock, which the back-off is counted from.
SELECT 1 + (SELECT count(*)
              FROM builds o
             WHERE o.package = b.package AND o.version = b.version AND o.target = b.target
               AND o.transient AND o.build_id <> b.build_id),
       now()
  FROM builds b
 WHERE b.build_id = %(build_id)s;
