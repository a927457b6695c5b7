-- The whole history of every package in derive_set, package by package in (timestamp, serial) order.
-- A rename's row belongs to the history of both names; "subject" says whose history a row is read for.
SELECT d.package AS subject, j.serial, j.name, j.package, j.version, j.ts, j.action, j.kind, j.other_package
FROM derive_set d JOIN journal j ON j.package = d.package
UNION ALL
SELECT d.package, j.serial, j.name, j.package, j.version, j.ts, j.action, j.kind, j.other_package
FROM derive_set d JOIN journal j ON j.other_package = d.package
WHERE j.other_package <> j.package
ORDER BY 1, 6, 2
