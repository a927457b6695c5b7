-- After a bulk replay, or a crash in one: the versions' date index that bulk_indexes_drop.sql dropped
-- (migration 004's definition), built in one sorted pass.
SET LOCAL maintenance_work_mem = '512MB';
CREATE INDEX IF NOT EXISTS versions_newest_first ON versions (released DESC, package, version);
