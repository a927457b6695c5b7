-- Before a bulk replay: indexes whose row-by-row upkeep costs more than building them once afterwards
-- (bulk_index_*.sql, which also mend them after a crash): those in random key order, and the journal's
-- partial one, whose predicate every stored row would be checked against. The journal's key too:
-- it cost a third of storing a page, and while a replay's serials only climb, sync.py tells a
-- re-delivery from a new serial without it (bulk_index_journal_key.sql builds it again).
ALTER TABLE journal DROP CONSTRAINT IF EXISTS journal_pkey;
DROP INDEX IF EXISTS journal_history;
DROP INDEX IF EXISTS journal_unusual;
DROP INDEX IF EXISTS versions_newest_first;
