-- One target's queue: its depth, how much of it is fresh, and the release date of its head.
SELECT count(*), count(*) FILTER (WHERE fresh), max(released)
FROM build_queue(%(target)s, %(fresh)s);
