-- The target next in line for one release: the first enabled target (numeric ABI order) that has not
-- tried it (a lost build was never tried), unless a pure wheel of it already serves every target.
SELECT t.name
FROM targets t
WHERE t.enabled
  AND NOT EXISTS (SELECT 1 FROM builds b
                  WHERE b.package = %(package)s AND b.version = %(version)s AND b.target = t.name
                    AND b.status <> 'lost')
  AND NOT EXISTS (SELECT 1 FROM wheels w
                  WHERE w.package = %(package)s AND w.version = %(version)s
                    AND w.abi_tag = 'none' AND w.platform_tag = 'any')
ORDER BY t.position, t.name
LIMIT 1;
