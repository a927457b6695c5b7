-- Every visible package, in the order of the root index: canonical name, display name, summary.
SELECT package, display_name, summary
  FROM packages
 WHERE present AND NOT quarantined
 ORDER BY package COLLATE "C"
