-- Before a bulk replay: indexes whose row-by-row upkeep in random key order costs more than building
-- them once afterwards (bulk_indexes_create.sql, which also mends them after a crash).
DROP INDEX IF EXISTS journal_history;
DROP INDEX IF EXISTS versions_newest_first;
