-- The CDN confirmed these purges: forget each unless it was owed again since it was read.
DELETE FROM cdn_purges AS p
USING unnest(%(keys)s::text[], %(versions)s::bigint[]) AS d(key, version)
WHERE p.key = d.key AND p.version = d.version
