-- What people asked for and found no page for, in the last 30 days: wanted but not built (or
-- deleted). What the catalog knows of each name says which. Ranked first, then looked up.
WITH top AS (
    SELECT package, sum(count)::bigint AS requests
    FROM searches
    WHERE day >= current_date - 29
    GROUP BY package
    ORDER BY sum(count) DESC, package
    LIMIT %(limit)s
)
SELECT top.package, top.requests, p.present, p.skip_reason,
       EXISTS (SELECT 1 FROM wheels w WHERE w.package = top.package)
FROM top
LEFT JOIN packages p ON p.package = top.package
ORDER BY top.requests DESC, top.package;
