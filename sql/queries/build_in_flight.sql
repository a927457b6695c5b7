-- Builds among `build_id` as the catalog knows them, with the builder account each is bound to: what
-- a sweep of the incoming folder, or a record step, needs.
SELECT build_id, package, version, target, abi, status, builder_account
FROM builds
WHERE build_id = ANY(%(build_id)s);
