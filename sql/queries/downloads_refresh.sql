-- The download figures of every package and release, as of the end of %(through)s (a whole day):
-- downloads in the 30 days to it and in all time. Only rows whose figures moved are written, and the
-- packages they belong to take the next change numbers (under the change lock, which the caller holds),
-- so the publisher rewrites exactly their pages. A package whose enrichment was current stays current:
-- new download figures are not a reason to read PyPI's JSON again.
WITH fresh AS (
    SELECT package, version,
           coalesce(sum(count) FILTER (WHERE day > %(through)s::date - 30), 0)::bigint AS last_30,
           sum(count)::bigint AS total
    FROM downloads
    WHERE day <= %(through)s::date
    GROUP BY package, version
), written AS (
    INSERT INTO download_counts AS c (package, version, last_30, total)
    SELECT package, version, last_30, total FROM fresh
    ON CONFLICT (package, version) DO UPDATE SET last_30 = EXCLUDED.last_30, total = EXCLUDED.total
    WHERE (c.last_30, c.total) IS DISTINCT FROM (EXCLUDED.last_30, EXCLUDED.total)
    RETURNING c.package
), numbered AS (
    SELECT package, nextval('change_seq') AS seq
    FROM (SELECT DISTINCT w.package FROM written w JOIN packages p USING (package) WHERE p.present
          ORDER BY 1) AS d
), bumped AS (
    UPDATE packages p
    SET change_seq = n.seq, changed_at = now(),
        enriched_seq = CASE WHEN p.enriched_seq >= p.change_seq THEN n.seq ELSE p.enriched_seq END
    FROM numbered n
    WHERE p.package = n.package
    RETURNING p.package
), state AS (
    INSERT INTO download_counts_state (through) VALUES (%(through)s::date)
    ON CONFLICT (singleton) DO UPDATE SET through = EXCLUDED.through, refreshed_at = now()
)
SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM bumped);
