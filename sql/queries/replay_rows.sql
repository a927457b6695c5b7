-- The rows a bulk replay journalled, (after, upto], that belong to the histories of one hash partition
-- of packages ({part} of {parts}); a rename's row belongs to both names. part_package/part_other say
-- which partition each name is in, so the reader knows whose histories are whole.
COPY (
    SELECT serial, name, package, version, ts, action, kind, other_package, part_package, part_other
    FROM (SELECT j.*, (hashtext(package) & 2147483647) % {parts} AS part_package,
                 (hashtext(other_package) & 2147483647) % {parts} AS part_other
          FROM journal j
          WHERE serial > {after} AND serial <= {upto}) AS replayed
    WHERE part_package = {part} OR part_other = {part}
) TO STDOUT (FORMAT csv)
