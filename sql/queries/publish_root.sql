-- Every visible package, in the order of the root index: canonical name, display name, summary. A
-- project an operator took down is not in it.
SELECT package, display_name, summary
  FROM packages
 WHERE present AND NOT quarantined
   AND NOT EXISTS (SELECT 1 FROM takedowns d WHERE d.package = packages.package AND d.version IS NULL)
 ORDER BY package COLLATE "C"
