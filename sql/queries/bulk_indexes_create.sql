-- After a bulk replay, or a crash in one: build what bulk_indexes_drop.sql dropped, in one sorted pass
-- each. The definitions are those of migrations 001 (journal_history) and 004 (versions_newest_first).
SET LOCAL maintenance_work_mem = '512MB';
CREATE INDEX IF NOT EXISTS journal_history ON journal (package, ts, serial);
CREATE INDEX IF NOT EXISTS versions_newest_first ON versions (released DESC, package, version);
