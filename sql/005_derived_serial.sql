-- Which journal rows the derived catalog reflects, as a serial watermark instead of a row per package.
--
-- Marking every package a page touches as pending cost as much as journalling the page itself during
-- a replay of PyPI's history (each page touches tens of thousands of packages, most of them again).
-- Now every journal row with serial <= derived_serial is reflected in the derived tables; the packages
-- of rows above it are folded by the next derive, which moves the mark when it is done.
-- pending_packages remains for rows that arrive below the mark (a re-delivery of an old serial that
-- the journal never had), and for marks taken before this migration.

ALTER TABLE sync_state ADD COLUMN derived_serial bigint NOT NULL DEFAULT 0;
-- Everything journalled so far was marked pending row by row: it is covered already.
UPDATE sync_state SET derived_serial = last_serial;
