-- Per target, successes and failures in the last day and the last week.
SELECT target,
       count(*) FILTER (WHERE status = 'success' AND finished_at >= now() - interval '24 hours'),
       count(*) FILTER (WHERE status = 'failure' AND finished_at >= now() - interval '24 hours'),
       count(*) FILTER (WHERE status = 'success'),
       count(*) FILTER (WHERE status = 'failure')
FROM builds
WHERE finished_at >= now() - interval '7 days'
GROUP BY target ORDER BY target;
