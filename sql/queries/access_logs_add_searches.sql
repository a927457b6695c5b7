-- Add a batch of searches: requests for /simple/<package>/ that found no page.
INSERT INTO searches AS s (day, package, count)
SELECT * FROM unnest(%(day)s::date[], %(package)s::text[], %(count)s::bigint[])
ON CONFLICT (day, package) DO UPDATE SET count = s.count + EXCLUDED.count;
