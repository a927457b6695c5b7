-- PyPI events per hour over the last day (every hour, empty ones too) and how many of each hour's
-- are from the last 60 minutes, from the tail of the journal: a backwards walk of its primary key,
-- bounded (PyPI journals about ten thousand events a day; a burst beyond 60,000 shows its newest part).
WITH tail AS (
    SELECT date_trunc('hour', to_timestamp(ts)) AS hour, ts >= extract(epoch FROM now() - interval '1 hour') AS recent
    FROM (SELECT ts FROM journal ORDER BY serial DESC LIMIT 60000) t
    WHERE ts >= extract(epoch FROM date_trunc('hour', now()) - interval '23 hours')
)
SELECT h.hour, count(tail.hour), count(tail.hour) FILTER (WHERE tail.recent)
FROM generate_series(date_trunc('hour', now()) - interval '23 hours', date_trunc('hour', now()),
                     interval '1 hour') AS h (hour)
LEFT JOIN tail ON tail.hour = h.hour
GROUP BY h.hour ORDER BY h.hour;
