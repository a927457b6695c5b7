-- The home page's totals: visible packages and releases, wheels and their bytes, packages with a
-- wheel, builds finished in the last day (and how many succeeded), downloads in the last 30 days (the
-- figures of the project pages: whole days, refreshed daily).
SELECT (SELECT count(*) FROM packages WHERE present AND NOT quarantined),
       (SELECT count(*) FROM versions v JOIN packages p USING (package)
         WHERE p.present AND NOT p.quarantined AND NOT v.quarantined),
       (SELECT count(*) FROM wheels),
       (SELECT coalesce(sum(size), 0)::bigint FROM wheels),
       (SELECT count(DISTINCT package) FROM wheels),
       (SELECT count(*) FROM builds WHERE finished_at >= now() - interval '24 hours'
                                      AND status IN ('success', 'failure')),
       (SELECT count(*) FROM builds WHERE finished_at >= now() - interval '24 hours' AND status = 'success'),
       (SELECT coalesce(sum(last_30), 0)::bigint FROM download_counts);
