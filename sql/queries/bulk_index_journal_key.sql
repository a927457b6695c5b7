-- The journal's key, which bulk_indexes_drop.sql dropped (migration 001's definition). Its index is
-- built first, under a lock that still lets the journal be read; making it the key takes a moment.
-- No parallel workers: see bulk_index_journal.sql.
SET LOCAL maintenance_work_mem = '512MB';
SET LOCAL max_parallel_maintenance_workers = 0;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'journal'::regclass AND contype = 'p') THEN
        CREATE UNIQUE INDEX IF NOT EXISTS journal_pkey ON journal (serial);
        ALTER TABLE journal ADD CONSTRAINT journal_pkey PRIMARY KEY USING INDEX journal_pkey;
    END IF;
END
$$;
