-- After a bulk replay, or a crash in one: the journal's indexes that bulk_indexes_drop.sql dropped
-- (migrations 001, 008 and 009), each built in one pass.
-- They are built beside the bulk fold, which keeps every core busy: parallel workers only added CPU
-- there (over 1M rows, 2.8-3.2 s of CPU with two workers against 2.4-2.7 s without). A mend after a
-- crash, which runs alone, takes longer without them; it is rare.
SET LOCAL maintenance_work_mem = '512MB';
SET LOCAL max_parallel_maintenance_workers = 0;
CREATE INDEX IF NOT EXISTS journal_history ON journal (package);
CREATE INDEX IF NOT EXISTS journal_unusual ON journal (other_package)
    WHERE other_package IS NOT NULL OR kind = 'unknown';
