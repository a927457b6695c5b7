-- Admit the history of one interval to a target's queue: the releases first uploaded in
-- [start, end), before the target was enabled (later ones are its fresh work already), with an sdist,
-- that the target has not built or failed yet. Admitting twice is a no-op (the primary key), so
-- re-running an interval queues nothing twice. Returns what the interval holds and what it admitted.
WITH candidates AS (
    SELECT v.package, v.version, v.released,
           EXISTS (SELECT 1 FROM builds b
                   WHERE b.package = v.package AND b.version = v.version
                     AND b.target = t.name AND b.status <> 'lost') AS tried
    FROM versions v
    JOIN targets t ON t.name = %(target)s AND t.enabled
    WHERE v.released >= %(start)s AND v.released < %(end)s AND v.released < t.enabled_at
      AND v.has_sdist
), admitted AS (
    INSERT INTO build_backfill (target, package, version, released)
    SELECT %(target)s, package, version, released FROM candidates WHERE NOT tried
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM candidates) AS releases,
       (SELECT count(*) FROM candidates WHERE tried) AS already_built,
       (SELECT count(*) FROM admitted) AS admitted;
