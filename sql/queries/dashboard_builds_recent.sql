-- Builds finished in the last day, per builder and target: how many in the last hour and day, and
-- how many of those succeeded (a 'lost' build counts as neither success nor failure).
SELECT coalesce(builder, '') AS builder, target,
       count(*) FILTER (WHERE finished_at >= now() - interval '1 hour' AND status IN ('success', 'failure')),
       count(*) FILTER (WHERE status IN ('success', 'failure')),
       count(*) FILTER (WHERE status = 'success'),
       count(*) FILTER (WHERE status = 'failure'),
       count(*) FILTER (WHERE status = 'lost')
FROM builds
WHERE finished_at >= now() - interval '24 hours'
GROUP BY 1, 2 ORDER BY 2, 1;
