-- Mirror the targets file into the catalog, one statement for all rows; unchanged rows are not touched.
INSERT INTO targets AS t (name, abi, platform, distro, enabled, position, queue)
SELECT * FROM unnest(%(name)s::text[], %(abi)s::text[], %(platform)s::text[], %(distro)s::text[],
                     %(enabled)s::boolean[], %(position)s::integer[], %(queue)s::text[])
ON CONFLICT (name) DO UPDATE SET
    abi = EXCLUDED.abi, platform = EXCLUDED.platform, distro = EXCLUDED.distro,
    enabled = EXCLUDED.enabled, position = EXCLUDED.position, queue = EXCLUDED.queue
WHERE (t.abi, t.platform, t.distro, t.enabled, t.position, t.queue)
      IS DISTINCT FROM (EXCLUDED.abi, EXCLUDED.platform, EXCLUDED.distro, EXCLUDED.enabled,
                        EXCLUDED.position, EXCLUDED.queue);
