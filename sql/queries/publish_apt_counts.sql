-- How many visible wheels need each apt package, per distro of the target that built them.
SELECT t.distro, d.dependency, count(*) AS wheels
  FROM wheel_dependencies d
  JOIN wheels w ON w.filename = d.filename
  JOIN builds b ON b.build_id = w.build_id
  JOIN targets t ON t.name = b.target
  JOIN packages p ON p.package = w.package
  JOIN versions v ON v.package = w.package AND v.version = w.version
 WHERE d.tool = 'apt' AND p.present AND NOT p.quarantined AND NOT v.quarantined
 GROUP BY t.distro, d.dependency
 ORDER BY t.distro, count(*) DESC, d.dependency
