-- The most downloaded packages over the last %(days)s days (public stats).
SELECT d.package, coalesce(p.display_name, d.package), sum(d.count)::bigint
FROM downloads d
LEFT JOIN packages p ON p.package = d.package
WHERE d.day > current_date - %(days)s::int
GROUP BY d.package, p.display_name
ORDER BY sum(d.count) DESC, d.package
LIMIT %(limit)s;
