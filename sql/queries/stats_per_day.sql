-- Downloads per day over the last %(days)s days, empty days included.
SELECT d.day::date, coalesce(sum(x.count), 0)::bigint
FROM generate_series(current_date - (%(days)s::int - 1), current_date, interval '1 day') AS d (day)
LEFT JOIN downloads x ON x.day = d.day::date
GROUP BY d.day ORDER BY d.day;
