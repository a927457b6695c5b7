-- A table's indexes, its keys and the foreign keys that point at it, as the statements that drop them
-- (in this order) and those that make them again (in the reverse order).
SELECT format('ALTER TABLE %%s DROP CONSTRAINT %%I', conrelid::regclass, conname) AS drop_statement,
       format('ALTER TABLE %%s ADD CONSTRAINT %%I %%s', conrelid::regclass, conname,
              pg_get_constraintdef(oid)) AS create_statement,
       1 AS step
FROM pg_constraint
WHERE confrelid = %(table)s::regclass AND contype = 'f'
UNION ALL
SELECT format('ALTER TABLE %%s DROP CONSTRAINT %%I', conrelid::regclass, conname),
       format('ALTER TABLE %%s ADD CONSTRAINT %%I %%s', conrelid::regclass, conname, pg_get_constraintdef(oid)),
       2
FROM pg_constraint
WHERE conrelid = %(table)s::regclass AND contype IN ('p', 'u', 'x')
UNION ALL
SELECT format('DROP INDEX %%s', indexrelid::regclass), pg_get_indexdef(indexrelid), 3
FROM pg_index i
WHERE indrelid = %(table)s::regclass
  AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)
ORDER BY step, drop_statement
