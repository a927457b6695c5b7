-- Every visible package, in the order of the root index: canonical name, display name, summary, and
-- its downloads in the last 30 days and in all time (download_counts: whole days, refreshed daily). A
-- project an operator took down is not in it.
SELECT p.package, p.display_name, p.summary, coalesce(c.last_30, 0), coalesce(c.total, 0)
FROM packages p
LEFT JOIN (SELECT package, sum(last_30)::bigint AS last_30, sum(total)::bigint AS total
             FROM download_counts GROUP BY package) c ON c.package = p.package
WHERE p.present AND NOT p.quarantined
  AND NOT EXISTS (SELECT 1 FROM takedowns d WHERE d.package = p.package AND d.version IS NULL)
ORDER BY p.package COLLATE "C";
