-- One row: the watermark, the sizes of the catalog, and the purge lag of the CDN.
SELECT
    (SELECT last_serial FROM sync_state),
    (SELECT count(*) FROM journal),
    (SELECT count(*) FROM journal_rejects),
    (SELECT count(*) FROM journal WHERE kind = 'unknown'),
    (SELECT count(*) FROM (SELECT package FROM pending_packages
                           UNION
                           SELECT j.package FROM journal j, sync_state s WHERE j.serial > s.derived_serial
                           UNION
                           SELECT j.other_package FROM journal j, sync_state s
                           WHERE j.serial > s.derived_serial AND j.other_package IS NOT NULL) waiting),
    (SELECT count(*) FROM packages WHERE present),
    (SELECT count(*) FROM packages WHERE NOT present),
    (SELECT count(*) FROM versions),
    (SELECT count(*) FROM source_files),
    (SELECT count(*) FROM packages WHERE present AND enriched_seq < change_seq),
    (SELECT coalesce(max(change_seq), 0) FROM packages),
    (SELECT count(*) FROM cdn_purges),
    (SELECT coalesce(extract(epoch FROM now() - min(owed_since)), 0)::float8 FROM cdn_purges)
