-- PyPI events per hour over the last day (every hour, empty ones too), from the tail of the journal
-- (a backwards walk of its primary key, bounded: a day of PyPI is tens of thousands of events).
WITH tail AS (
    SELECT date_trunc('hour', to_timestamp(ts)) AS hour
    FROM (SELECT ts FROM journal ORDER BY serial DESC LIMIT 200000) t
    WHERE ts >= extract(epoch FROM date_trunc('hour', now()) - interval '23 hours')
)
SELECT h.hour, count(tail.hour)
FROM generate_series(date_trunc('hour', now()) - interval '23 hours', date_trunc('hour', now()),
                     interval '1 hour') AS h (hour)
LEFT JOIN tail ON tail.hour = h.hour
GROUP BY h.hour ORDER BY h.hour;
