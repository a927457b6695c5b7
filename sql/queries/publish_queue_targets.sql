-- Every enabled target as queue.json shows it: paused, taking builds, its queue's length as last
-- sampled (the builder_health DAG counts it every 5 minutes: counting is a pass over every release)
-- and its pace, builds finished per hour over the last day (an index range over builds_finished).
SELECT t.name, t.paused, target_takes_builds(t.name),
       s.queue_depth, s.taken_at,
       (SELECT count(*) FROM builds b
         WHERE b.target = t.name AND b.finished_at >= now() - interval '24 hours'
           AND b.status IN ('success', 'failure'))::float / 24
FROM targets t
LEFT JOIN LATERAL (SELECT queue_depth, taken_at FROM dashboard_samples d
                    WHERE d.target = t.name ORDER BY taken_at DESC LIMIT 1) s ON true
WHERE t.enabled
ORDER BY t.position, t.name;
