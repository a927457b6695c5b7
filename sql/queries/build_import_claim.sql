-- A build row for wheels an operator imports (`wheelwright import`), 'building' until intake records
-- it like any build: for a release that may be published (the project present, neither quarantined nor
-- taken down; a release skipped for the builders may be imported: the skip stops builds, not what an
-- operator brings), unless a build of it is in flight on that target.
INSERT INTO builds (package, version, abi, target, status, builder, imported_by)
SELECT v.package, v.version, t.abi, t.name, 'building', %(builder)s, %(imported_by)s
FROM versions v
JOIN packages p ON p.package = v.package
JOIN targets t ON t.name = %(target)s
WHERE v.package = %(package)s AND v.version = %(version)s
  AND NOT v.quarantined AND p.present AND NOT p.quarantined
  AND NOT EXISTS (SELECT 1 FROM takedowns d
                  WHERE d.package = v.package AND (d.version IS NULL OR d.version = v.version))
ON CONFLICT (package, version, target) WHERE status = 'building' DO NOTHING
RETURNING build_id, abi;
