-- Targets no longer in the file are retired: no more builds, their wheels stay.
UPDATE targets SET enabled = false
WHERE enabled AND name <> ALL (%(name)s::text[]);
