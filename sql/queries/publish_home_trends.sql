-- The home page's trends over the last 30 days, one row a day (empty days too): builds that
-- succeeded and failed, wheels served at the end of the day (today: now), downloads.
SELECT d.day::date,
       (SELECT count(*) FROM builds b WHERE b.finished_at >= d.day AND b.finished_at < d.day + interval '1 day'
                                      AND b.status = 'success'),
       (SELECT count(*) FROM builds b WHERE b.finished_at >= d.day AND b.finished_at < d.day + interval '1 day'
                                      AND b.status = 'failure'),
       coalesce((SELECT s.wheels FROM sync_samples s WHERE s.taken_at < d.day + interval '1 day'
                 ORDER BY s.taken_at DESC LIMIT 1),
                CASE WHEN d.day::date = current_date THEN (SELECT count(*) FROM wheels) END, 0),
       (SELECT coalesce(sum(x.count), 0)::bigint FROM downloads x WHERE x.day = d.day::date)
FROM generate_series(current_date - 29, current_date, interval '1 day') AS d (day)
ORDER BY d.day;
