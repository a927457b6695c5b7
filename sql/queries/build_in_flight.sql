-- Builds among `build_id` as the catalog knows them: what a sweep of the incoming folder needs.
SELECT build_id, package, version, target, abi, status
FROM builds
WHERE build_id = ANY(%(build_id)s);
