-- Add a batch of refused lines, per day and reason; the first sample of a reason stays.
INSERT INTO access_log_refusals AS r (day, source, reason, count, sample)
SELECT day, %(source)s, reason, count, sample
FROM unnest(%(day)s::date[], %(reason)s::text[], %(count)s::bigint[], %(sample)s::text[])
     AS x (day, reason, count, sample)
ON CONFLICT (day, source, reason) DO UPDATE SET count = r.count + EXCLUDED.count;
