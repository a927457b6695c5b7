-- Mirror the targets file into the catalog, one statement for all rows; unchanged rows are not touched.
-- enabled_at: a target new to the catalog, or enabled again after it was retired, starts now (its
-- history enters its queue by backfill); the targets of a new installation (none mirrored before)
-- start at '-infinity': the whole catalog is their queue.
INSERT INTO targets AS t (name, abi, platform, distro, enabled, position, queue, enabled_at)
SELECT f.*, CASE WHEN EXISTS (SELECT 1 FROM targets) THEN now() ELSE '-infinity' END
FROM unnest(%(name)s::text[], %(abi)s::text[], %(platform)s::text[], %(distro)s::text[],
            %(enabled)s::boolean[], %(position)s::integer[], %(queue)s::text[]) AS f
ON CONFLICT (name) DO UPDATE SET
    abi = EXCLUDED.abi, platform = EXCLUDED.platform, distro = EXCLUDED.distro,
    enabled = EXCLUDED.enabled, position = EXCLUDED.position, queue = EXCLUDED.queue,
    enabled_at = CASE WHEN EXCLUDED.enabled AND NOT t.enabled THEN now() ELSE t.enabled_at END
WHERE (t.abi, t.platform, t.distro, t.enabled, t.position, t.queue)
      IS DISTINCT FROM (EXCLUDED.abi, EXCLUDED.platform, EXCLUDED.distro, EXCLUDED.enabled,
                        EXCLUDED.position, EXCLUDED.queue);
