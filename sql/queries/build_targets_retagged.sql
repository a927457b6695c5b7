-- Targets of the file whose name already built for other ABI/platform tags (the mirror refuses them).
SELECT t.name, t.abi, t.platform
FROM targets t
JOIN unnest(%(name)s::text[], %(abi)s::text[], %(platform)s::text[]) AS f(name, abi, platform)
  ON f.name = t.name
WHERE (t.abi, t.platform) IS DISTINCT FROM (f.abi, f.platform)
  AND EXISTS (SELECT 1 FROM builds b WHERE b.target = t.name)
ORDER BY t.name;
