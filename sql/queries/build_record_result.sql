-- The result of a build in flight.
UPDATE builds
SET status = %(status)s, reason = %(reason)s, builder = %(builder)s, duration = %(duration)s,
    finished_at = now(), log_path = %(log_path)s
WHERE build_id = %(build_id)s AND status = 'building';
