-- Downloads per day over the last 30 days (every day, empty ones too).
SELECT d.day::date, coalesce(sum(x.count), 0)::bigint
FROM generate_series(current_date - 29, current_date, interval '1 day') AS d (day)
LEFT JOIN downloads x ON x.day = d.day::date
GROUP BY d.day ORDER BY d.day;
