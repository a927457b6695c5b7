-- The build being recorded, its target's tags, and whether its release may still be published, locked
-- until the commit:
-- the build row against a second recording, the release and package against a concurrent skip,
-- quarantine or deletion (which waits for us, and then removes what we recorded).
SELECT b.status, p.present, p.quarantined, p.skip_reason, v.quarantined, v.skip_reason,
       t.abi, t.platform
FROM builds b
JOIN versions v ON v.package = b.package AND v.version = b.version
JOIN packages p ON p.package = b.package
JOIN targets t ON t.name = b.target
WHERE b.build_id = %s
FOR UPDATE OF b
FOR SHARE OF v, p;
