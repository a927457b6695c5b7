-- A package's derived state is compared row by row, not by a fingerprint.
--
-- state_hash was a digest of the folded state that the Python fold computed; derive compared it to
-- decide whether a re-folded package changed. A bulk replay now folds in a data frame (bulk_fold.py),
-- which has no such digest, and the staged rows themselves say the same thing: derive_apply.sql
-- compares them with the catalog's rows.
ALTER TABLE packages DROP COLUMN state_hash;
