-- Every target, whether it takes builds now, its latest queue sample and what it has in flight.
SELECT t.name, t.abi, t.platform, t.distro, t.enabled, t.paused, t.paused_reason, t.paused_by, t.paused_at,
       target_takes_builds(t.name),
       q.queue_depth, q.queue_fresh, q.head_released, q.taken_at,
       (SELECT count(*) FROM builds b WHERE b.status = 'building' AND b.target = t.name)
FROM targets t
LEFT JOIN LATERAL (SELECT * FROM dashboard_samples d WHERE d.target = t.name
                   ORDER BY d.taken_at DESC LIMIT 1) q ON true
ORDER BY NOT t.enabled, t.position, t.name;
