-- The result of a build in flight. A transient failure ('retry') says when it may be tried again.
UPDATE builds
SET status = %(status)s, reason = %(reason)s, builder = %(builder)s, duration = %(duration)s,
    finished_at = now(), log_path = %(log_path)s,
    transient = %(transient)s, not_before = %(not_before)s
WHERE build_id = %(build_id)s AND status = 'building';
