-- After a bulk replay, or a crash in one: the journal's indexes that bulk_indexes_drop.sql dropped
-- (migrations 001 and 008), each built in one pass.
SET LOCAL maintenance_work_mem = '512MB';
CREATE INDEX IF NOT EXISTS journal_history ON journal (package);
CREATE INDEX IF NOT EXISTS journal_renames ON journal (other_package) WHERE other_package IS NOT NULL;
CREATE INDEX IF NOT EXISTS journal_kinds ON journal (kind) WHERE kind = 'unknown';
