-- What the catalog knows of how long each claimed build will take, for packing quick builds into
-- one task (builds/batches.py): the duration of the package's latest finished build (of any version;
-- this target's first, as an emulated target's builds are several times slower, then any other's),
-- and the size of the release's sdist (the JSON API's; NULL until enriched).
SELECT b.build_id,
       (SELECT extract(epoch FROM p.duration)::float8
          FROM builds p
         WHERE p.package = b.package AND p.status IN ('success', 'failure') AND p.duration IS NOT NULL
         ORDER BY (p.target = b.target) DESC, p.finished_at DESC NULLS LAST
         LIMIT 1) AS last_seconds,
       (SELECT max(f.size)
          FROM source_files f
         WHERE f.package = b.package AND f.version = b.version AND f.pyver = 'source') AS sdist_size
FROM builds b
WHERE b.build_id = ANY(%(build_ids)s);
