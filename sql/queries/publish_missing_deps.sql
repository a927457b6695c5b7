-- Failed builds of visible releases whose logs show something missing, latest build first.
SELECT f.kind, f.missing, b.build_id, b.package, b.version, b.abi, b.log_path, p.display_name
  FROM log_findings f
  JOIN builds b ON b.build_id = f.build_id
  JOIN packages p ON p.package = b.package
  JOIN versions v ON v.package = b.package AND v.version = b.version
 WHERE p.present AND NOT p.quarantined AND NOT v.quarantined
 ORDER BY f.kind, f.missing, b.build_id DESC
