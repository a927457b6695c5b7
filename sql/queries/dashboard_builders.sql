-- Registered builders, their last health check and what they built in the last day.
SELECT b.name, b.target, b.build_dir, b.max_temp_c, b.min_free_bytes,
       h.checked_at, h.reachable, h.temp_c, h.load1, h.load5, h.load15, h.mem_total, h.mem_available,
       h.disk_free, h.disk_total, h.images_newest, coalesce(h.held, false), h.held_reason, h.held_since,
       h.error
FROM builders b
LEFT JOIN builder_health h ON h.builder = b.name
ORDER BY b.target, b.name;
