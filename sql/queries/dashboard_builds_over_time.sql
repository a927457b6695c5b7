-- Finished builds per hour over the last two days, by outcome (every hour, empty ones too): the
-- builds chart.
SELECT h.hour,
       count(*) FILTER (WHERE b.status = 'success'),
       count(*) FILTER (WHERE b.status = 'failure'),
       count(*) FILTER (WHERE b.status = 'lost')
FROM generate_series(date_trunc('hour', now()) - interval '47 hours', date_trunc('hour', now()),
                     interval '1 hour') AS h (hour)
LEFT JOIN builds b ON b.finished_at >= h.hour AND b.finished_at < h.hour + interval '1 hour'
GROUP BY h.hour ORDER BY h.hour;
