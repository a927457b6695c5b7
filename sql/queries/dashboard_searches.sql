-- What people asked for and found no page for, in the last 30 days: wanted but not built (or
-- deleted). What the catalog knows of each name says which.
SELECT s.package, sum(s.count)::bigint, p.present, p.skip_reason,
       EXISTS (SELECT 1 FROM wheels w WHERE w.package = s.package)
FROM searches s
LEFT JOIN packages p ON p.package = s.package
WHERE s.day >= current_date - 29
GROUP BY s.package, p.present, p.skip_reason
ORDER BY sum(s.count) DESC, s.package
LIMIT %(limit)s;
