-- Claim one named release for one named target (`wheelwright build`): a 'building' row, as the build
-- queue's claim makes, if the release may be built at all (an sdist; nothing deleted, quarantined,
-- skipped or taken down) and no build of it is in flight on that target. The target may be disabled:
-- an operator tries a target before enabling it.
INSERT INTO builds (package, version, abi, target, status)
SELECT v.package, v.version, t.abi, t.name, 'building'
FROM versions v
JOIN packages p ON p.package = v.package
JOIN targets t ON t.name = %(target)s
WHERE v.package = %(package)s AND v.version = %(version)s
  AND v.has_sdist AND NOT v.quarantined AND v.skip_reason IS NULL
  AND p.present AND NOT p.quarantined AND p.skip_reason IS NULL
  AND NOT EXISTS (SELECT 1 FROM takedowns d
                  WHERE d.package = v.package AND (d.version IS NULL OR d.version = v.version))
ON CONFLICT (package, version, target) WHERE status = 'building' DO NOTHING
RETURNING build_id, package, version, target, abi;
