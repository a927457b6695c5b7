-- Everything the pages of one package show, one row per package whose change_seq lies in
-- (%(after)s, %(upto)s]: the package, its aliases, its visible releases (newest first), its builds and
-- its wheels (of every version, so the publisher knows which files the catalog still lists), its
-- download figures and the operator's build settings of the package (builds/build_settings.py), if
-- any. Each release says which enabled targets hold it in their scope (uploaded since the target was
-- enabled, or admitted by a backfill: the build queue's own rule, migration 018), so the page can say
-- where it stands on each.
-- Nested rows are JSON arrays (positional, to keep the rows small); times are ISO 8601 UTC strings.
-- An operator's takedown (of the project, or of a release) comes with its reason and time.
SELECT p.package,
       p.display_name,
       p.present AND NOT p.quarantined AS visible,
       p.present,
       p.summary,
       p.skip_reason,
       coalesce((SELECT array_agg(a.alias ORDER BY a.alias)
                   FROM aliases a
                  WHERE a.package = p.package), '{}') AS aliases,
       (SELECT json_agg(json_build_array(
                   v.version,
                   to_char(v.released AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   v.prerelease, v.yanked, v.yanked_reason, v.requires_python, v.skip_reason,
                   v.has_sdist, v.requires_dist,
                   (SELECT array_agg(t.name ORDER BY t.name) FROM targets t
                     WHERE t.enabled
                       AND (v.released >= t.enabled_at
                            OR EXISTS (SELECT 1 FROM build_backfill bf
                                        WHERE bf.target = t.name AND bf.package = v.package
                                          AND bf.version = v.version))),
                   c.last_30, c.total,
                   (SELECT d.reason FROM takedowns d WHERE d.package = v.package AND d.version = v.version))
                   ORDER BY v.rank DESC)
          FROM versions v
          LEFT JOIN download_counts c ON c.package = v.package AND c.version = v.version
         WHERE v.package = p.package AND NOT v.quarantined) AS releases,
       (SELECT json_agg(json_build_array(
                   b.build_id, b.version, b.abi, b.status, b.builder,
                   extract(epoch FROM b.duration), b.log_path, b.reason, b.target, b.imported_by,
                   to_char(b.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
                   ORDER BY b.build_id)
          FROM builds b
         WHERE b.package = p.package) AS builds,
       (SELECT json_agg(json_build_array(
                   w.filename, w.build_id, w.version, w.size, w.sha256, w.abi_tag, w.platform_tag,
                   w.requires_python, w.metadata_sha256,
                   to_char(w.uploaded AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   (SELECT json_agg(json_build_array(d.tool, d.dependency) ORDER BY d.tool, d.dependency)
                      FROM wheel_dependencies d
                     WHERE d.filename = w.filename),
                   w.requires_dist, w.glibc_floor, w.tested_on, w.test_result, w.test_detail)
                   ORDER BY w.filename)
          FROM wheels w
         WHERE w.package = p.package) AS wheels,
       (SELECT json_build_array(sum(c.last_30), sum(c.total))
          FROM download_counts c
         WHERE c.package = p.package) AS downloads,
       (SELECT json_build_object('apt_packages', s.apt_packages,
                                 'timeout', extract(epoch FROM s.timeout),
                                 'environment', s.environment,
                                 'changed_by', s.changed_by,
                                 'changed_at', to_char(s.changed_at AT TIME ZONE 'UTC',
                                                       'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
          FROM build_settings s
         WHERE s.package = p.package) AS build_settings,
       (SELECT json_build_array(d.reason,
                   to_char(d.removed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
          FROM takedowns d
         WHERE d.package = p.package AND d.version IS NULL) AS takedown
  FROM packages p
 WHERE p.change_seq > %(after)s AND p.change_seq <= %(upto)s
