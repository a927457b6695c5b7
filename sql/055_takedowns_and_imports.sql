-- Operator takedowns (piwheels' piw-remove) and wheels imported by hand (piw-import).
--
-- takedowns          a project (version NULL) or one release an operator took off the index, though it is
--                    still on PyPI: its wheels and builds are gone, the publisher serves none of its files
--                    (a removed project's simple pages answer 404), and the build queue passes it by, for
--                    as long as the row exists. Keyed by name, not by the catalog's rows: PyPI deleting
--                    and re-creating the project (the sync re-deriving it) does not bring it back.
-- builds.imported_by the operator who imported this build's wheel by hand (`wheelwright import`): the
--                    build ran on no builder, so no builder account answers for it; the project page
--                    says "imported by".

CREATE TABLE takedowns (
    package     text COLLATE "C" NOT NULL,    -- canonical name
    version     text COLLATE "C",             -- as the catalog spells it; NULL: the whole project
    reason      text NOT NULL,
    removed_by  text NOT NULL,
    removed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX takedowns_one_per_release ON takedowns (package, coalesce(version, ''));

ALTER TABLE builds ADD COLUMN imported_by text;

DROP FUNCTION build_queue(text, interval, timestamptz);

-- The build queue of one target (migration 018's), passing by what an operator took down.
CREATE FUNCTION build_queue(target_name text, fresh_window interval, since timestamptz DEFAULT NULL)
RETURNS TABLE (package text, version text, released timestamptz, fresh boolean, backfill boolean)
LANGUAGE sql STABLE AS $$
    SELECT v.package, v.version, v.released, v.released >= now() - fresh_window AS fresh, q.backfill
    FROM (SELECT v.package, v.version, false AS backfill
          FROM versions v JOIN targets t ON t.name = target_name AND t.enabled
          WHERE v.released >= t.enabled_at AND (since IS NULL OR v.released >= since)
          UNION ALL
          SELECT bf.package, bf.version, true
          FROM build_backfill bf JOIN targets t ON t.name = bf.target AND t.enabled
          WHERE bf.target = target_name AND bf.released < t.enabled_at
            AND (since IS NULL OR bf.released >= since)) AS q
    JOIN versions v ON v.package = q.package AND v.version = q.version
    JOIN packages p ON p.package = v.package
    WHERE v.has_sdist AND NOT v.quarantined AND v.skip_reason IS NULL
      AND p.present AND NOT p.quarantined AND p.skip_reason IS NULL
      AND NOT EXISTS (SELECT 1 FROM takedowns d
                      WHERE d.package = v.package AND (d.version IS NULL OR d.version = v.version))
      AND NOT EXISTS (SELECT 1 FROM builds b
                      WHERE b.package = v.package AND b.version = v.version
                        AND b.target = target_name AND b.status <> 'lost')
      AND NOT EXISTS (SELECT 1 FROM wheels w
                      WHERE w.package = v.package AND w.version = v.version
                        AND w.abi_tag = 'none' AND w.platform_tag = 'any')
      AND NOT EXISTS (SELECT 1 FROM targets e JOIN targets t ON t.name = target_name
                      WHERE e.enabled AND (e.position, e.name) < (t.position, t.name)
                        AND (v.released >= e.enabled_at
                             OR EXISTS (SELECT 1 FROM build_backfill bf
                                        WHERE bf.target = e.name AND bf.package = v.package
                                          AND bf.version = v.version))
                        AND NOT EXISTS (SELECT 1 FROM builds b
                                        WHERE b.package = v.package AND b.version = v.version
                                          AND b.target = e.name AND b.status IN ('success', 'failure')))
    ORDER BY q.backfill, v.released DESC, v.package, v.version
$$;
