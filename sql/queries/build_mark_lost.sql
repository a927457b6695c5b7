-- Give up on one build in flight: 'lost' is not counted as tried, so its release re-queues.
UPDATE builds
SET status = 'lost', finished_at = now(), duration = now() - started_at, reason = left(%(reason)s, 500)
WHERE build_id = %(build_id)s AND status = 'building'
RETURNING build_id;
