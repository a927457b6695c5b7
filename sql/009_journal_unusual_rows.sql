-- The journal's rare rows (renames, and actions wheelwright does not know) in one partial index.
--
-- journal_renames (other_package) and journal_kinds (kind = 'unknown') each held a few rows of the
-- journal, yet building either after a bulk replay read every row of it: over 1M rows, 0.15-0.35 s of
-- database CPU each, as much as this one index on the rows of both takes. It serves the queries of both:
-- a lookup of other_package implies its predicate, and so does kind = 'unknown', which reads it whole
-- (it is small) and filters.

DROP INDEX IF EXISTS journal_renames;
DROP INDEX IF EXISTS journal_kinds;
CREATE INDEX IF NOT EXISTS journal_unusual ON journal (other_package)
    WHERE other_package IS NOT NULL OR kind = 'unknown';
