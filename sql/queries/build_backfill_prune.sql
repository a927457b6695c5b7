-- Backfill rows whose release the target has finished (built or failed), or that a pure wheel of
-- another target already serves: they will never be claimed again, so they leave the table.
DELETE FROM build_backfill bf
WHERE EXISTS (SELECT 1 FROM builds b
              WHERE b.package = bf.package AND b.version = bf.version AND b.target = bf.target
                AND b.status IN ('success', 'failure'))
   OR EXISTS (SELECT 1 FROM wheels w
              WHERE w.package = bf.package AND w.version = bf.version
                AND w.abi_tag = 'none' AND w.platform_tag = 'any');
