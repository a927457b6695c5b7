-- Append the staged changelog rows to the journal; a serial already there is a re-delivery: no-op.
INSERT INTO journal (serial, name, package, version, ts, action, kind, other_package)
SELECT serial, name, package, version, ts, action, kind, other_package
FROM journal_incoming
ON CONFLICT (serial) DO NOTHING
