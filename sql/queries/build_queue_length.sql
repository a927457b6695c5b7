-- How many releases wait for a target, and how many of them are fresh.
SELECT count(*), count(*) FILTER (WHERE fresh)
FROM build_queue(%(target)s, %(fresh)s);
