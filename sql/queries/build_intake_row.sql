-- What the index host itself knows of a build it handed out: the release and the target's tags. A
-- worker's outcome is checked against this row, never the other way round.
SELECT b.build_id, b.package, b.version, b.target, t.abi, t.platform, b.status
FROM builds b
JOIN targets t ON t.name = b.target
WHERE b.build_id = %s;
