-- Before a bulk replay: indexes whose row-by-row upkeep costs more than building them once afterwards
-- (bulk_index_*.sql, which also mend them after a crash): those in random key order, and the journal's
-- partial ones, whose predicates cost a third of the upkeep of its primary key.
DROP INDEX IF EXISTS journal_history;
DROP INDEX IF EXISTS journal_renames;
DROP INDEX IF EXISTS journal_kinds;
DROP INDEX IF EXISTS versions_newest_first;
