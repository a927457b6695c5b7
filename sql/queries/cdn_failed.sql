-- A delivery of these keys failed: try again after an exponential back-off (capped at ten minutes).
UPDATE cdn_purges
SET attempts = attempts + 1,
    last_error = %(error)s,
    next_try = now() + least(interval '10 minutes', interval '1 second' * power(2, least(attempts, 10)))
WHERE key = ANY(%(keys)s::text[])
