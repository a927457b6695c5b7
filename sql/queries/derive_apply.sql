-- Write the staged state of the derived packages (derive_packages) over the catalog, set-based.
-- Caller holds the change_seq lock, so numbers commit in order.
ANALYZE derive_packages, derive_aliases, derive_versions, derive_files;

-- A package changed when any of its rows differs from the catalog's: the journal decides these
-- columns (rank, validity and has_sdist follow from the versions and files). The others are left as
-- they are, and take no change number.
INSERT INTO derive_unchanged (package)
SELECT package FROM derive_packages
EXCEPT SELECT package FROM (
    SELECT package, display_name, present, born_serial, quarantined FROM derive_packages
    EXCEPT
    SELECT p.package, p.display_name, p.present, p.born_serial, p.quarantined
    FROM packages p JOIN derive_packages USING (package)) AS differs
EXCEPT SELECT package FROM (
    SELECT package, alias, last_ts, last_serial FROM derive_aliases
    EXCEPT
    SELECT a.package, a.alias, a.last_ts, a.last_serial FROM aliases a JOIN derive_packages USING (package)) AS differs
EXCEPT SELECT package FROM (
    SELECT a.package, a.alias, a.last_ts, a.last_serial FROM aliases a JOIN derive_packages USING (package)
    EXCEPT
    SELECT package, alias, last_ts, last_serial FROM derive_aliases) AS differs
EXCEPT SELECT package FROM (
    SELECT package, version, born_serial, to_timestamp(released), yanked, quarantined FROM derive_versions
    EXCEPT
    SELECT v.package, v.version, v.born_serial, v.released, v.yanked, v.quarantined
    FROM versions v JOIN derive_packages USING (package)) AS differs
EXCEPT SELECT package FROM (
    SELECT v.package, v.version, v.born_serial, v.released, v.yanked, v.quarantined
    FROM versions v JOIN derive_packages USING (package)
    EXCEPT
    SELECT package, version, born_serial, to_timestamp(released), yanked, quarantined FROM derive_versions) AS differs
EXCEPT SELECT package FROM (
    SELECT package, filename, version, pyver, born_serial, to_timestamp(uploaded) FROM derive_files
    EXCEPT
    SELECT f.package, f.filename, f.version, f.pyver, f.born_serial, f.uploaded
    FROM source_files f JOIN derive_packages USING (package)) AS differs
EXCEPT SELECT package FROM (
    SELECT f.package, f.filename, f.version, f.pyver, f.born_serial, f.uploaded
    FROM source_files f JOIN derive_packages USING (package)
    EXCEPT
    SELECT package, filename, version, pyver, born_serial, to_timestamp(uploaded) FROM derive_files) AS differs;

DELETE FROM derive_packages d USING derive_unchanged u WHERE d.package = u.package;
DELETE FROM derive_aliases d USING derive_unchanged u WHERE d.package = u.package;
DELETE FROM derive_versions d USING derive_unchanged u WHERE d.package = u.package;
DELETE FROM derive_files d USING derive_unchanged u WHERE d.package = u.package;

INSERT INTO packages AS p (package, display_name, present, born_serial, quarantined, change_seq, changed_at)
SELECT package, display_name, present, born_serial, quarantined, nextval('change_seq'), now()
FROM derive_packages
ORDER BY package
ON CONFLICT (package) DO UPDATE SET
    display_name = EXCLUDED.display_name, present = EXCLUDED.present,
    born_serial = EXCLUDED.born_serial, quarantined = EXCLUDED.quarantined,
    change_seq = EXCLUDED.change_seq, changed_at = EXCLUDED.changed_at;

-- Versions that are gone, or whose current life began elsewhere (deleted and re-created): their
-- files, builds and wheels cascade away with them.
DELETE FROM versions v USING derive_packages d
WHERE v.package = d.package
  AND NOT EXISTS (SELECT 1 FROM derive_versions n
                  WHERE n.package = v.package AND n.version = v.version AND n.born_serial = v.born_serial);

-- Files that are gone, with their version or alone (remove file).
DELETE FROM source_files f USING derive_packages d
WHERE f.package = d.package
  AND NOT EXISTS (SELECT 1 FROM derive_files n
                  WHERE n.package = f.package AND n.filename = f.filename AND n.born_serial = f.born_serial);

INSERT INTO versions AS v (package, version, born_serial, released, rank, valid, prerelease, yanked,
                           quarantined, has_sdist)
SELECT package, version, born_serial, to_timestamp(released), rank, valid, prerelease, yanked,
       quarantined, has_sdist
FROM derive_versions
ON CONFLICT (package, version) DO UPDATE SET
    released = EXCLUDED.released, rank = EXCLUDED.rank, yanked = EXCLUDED.yanked,
    quarantined = EXCLUDED.quarantined, has_sdist = EXCLUDED.has_sdist
WHERE (v.released, v.rank, v.yanked, v.quarantined, v.has_sdist)
      IS DISTINCT FROM (EXCLUDED.released, EXCLUDED.rank, EXCLUDED.yanked, EXCLUDED.quarantined,
                        EXCLUDED.has_sdist);

INSERT INTO source_files (package, filename, version, pyver, born_serial, uploaded)
SELECT package, filename, version, pyver, born_serial, to_timestamp(uploaded)
FROM derive_files
ON CONFLICT (package, filename) DO NOTHING;

DELETE FROM aliases a USING derive_packages d WHERE a.package = d.package;
INSERT INTO aliases (package, alias, last_ts, last_serial)
SELECT package, alias, last_ts, last_serial FROM derive_aliases;
