-- Finished builds per hour over the last two days, by outcome: the builds chart.
SELECT date_trunc('hour', finished_at) AS hour,
       count(*) FILTER (WHERE status = 'success'),
       count(*) FILTER (WHERE status = 'failure'),
       count(*) FILTER (WHERE status = 'lost')
FROM builds
WHERE finished_at >= date_trunc('hour', now()) - interval '47 hours'
GROUP BY 1 ORDER BY 1;
