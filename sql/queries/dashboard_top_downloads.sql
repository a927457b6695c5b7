-- The most downloaded packages of the last 30 days. Ranked first, then named.
WITH top AS (
    SELECT package, sum(count)::bigint AS downloads
    FROM downloads
    WHERE day >= current_date - 29
    GROUP BY package
    ORDER BY sum(count) DESC, package
    LIMIT %(limit)s
)
SELECT top.package, coalesce(p.display_name, top.package), top.downloads
FROM top
LEFT JOIN packages p ON p.package = top.package
ORDER BY top.downloads DESC, top.package;
