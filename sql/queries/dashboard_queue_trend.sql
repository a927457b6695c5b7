-- Queue depth per target over the last week, from the samples.
SELECT target, taken_at, queue_depth
FROM dashboard_samples
WHERE taken_at >= now() - interval '7 days'
ORDER BY target, taken_at;
