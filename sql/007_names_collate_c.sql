-- Names, versions and file names compare byte by byte (collation "C"), whatever the server's locale.
--
-- They are identifiers, not prose: their order must not depend on the locale a server was created with
-- (en_US sorts "foo-bar" between "foob" and "foobaz", ignoring the hyphen), and byte order is what
-- C.UTF-8 gives anyway. It is also several times cheaper: under a libc locale PostgreSQL compares with
-- strcoll and cannot sort on abbreviated keys, and building the keys and indexes on these columns was
-- a fifth of the database's work in a replay of PyPI's history.
--
-- Changing only the collation rewrites no table; the indexes on these columns are built again.

ALTER TABLE journal
    ALTER COLUMN name TYPE text COLLATE "C",
    ALTER COLUMN package TYPE text COLLATE "C",
    ALTER COLUMN version TYPE text COLLATE "C",
    ALTER COLUMN action TYPE text COLLATE "C",
    ALTER COLUMN kind TYPE text COLLATE "C",
    ALTER COLUMN other_package TYPE text COLLATE "C";
ALTER TABLE pending_packages ALTER COLUMN package TYPE text COLLATE "C";
ALTER TABLE packages
    ALTER COLUMN package TYPE text COLLATE "C",
    ALTER COLUMN display_name TYPE text COLLATE "C";
ALTER TABLE aliases
    ALTER COLUMN package TYPE text COLLATE "C",
    ALTER COLUMN alias TYPE text COLLATE "C";
ALTER TABLE versions
    ALTER COLUMN package TYPE text COLLATE "C",
    ALTER COLUMN version TYPE text COLLATE "C";
ALTER TABLE source_files
    ALTER COLUMN package TYPE text COLLATE "C",
    ALTER COLUMN filename TYPE text COLLATE "C",
    ALTER COLUMN version TYPE text COLLATE "C",
    ALTER COLUMN pyver TYPE text COLLATE "C";
ALTER TABLE builds
    ALTER COLUMN package TYPE text COLLATE "C",
    ALTER COLUMN version TYPE text COLLATE "C";
ALTER TABLE wheels
    ALTER COLUMN filename TYPE text COLLATE "C",
    ALTER COLUMN package TYPE text COLLATE "C",
    ALTER COLUMN version TYPE text COLLATE "C";
ALTER TABLE wheel_dependencies ALTER COLUMN filename TYPE text COLLATE "C";
