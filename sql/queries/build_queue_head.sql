-- The next releases a target would build, without claiming them (for status and the dashboard).
SELECT package, version, released, fresh
FROM build_queue(%(target)s, %(fresh)s)
ORDER BY released DESC, package, version
LIMIT %(limit)s;
