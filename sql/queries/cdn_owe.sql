-- Owe purges of %(keys)s (parallel to %(removals)s: a text[] of paths per key, JSON-encoded),
-- merging with what is owed already: the oldest owed_since stays, the removals add up, and the
-- version moves so that a delivery in flight does not delete the newer debt.
INSERT INTO cdn_purges AS p (key, then_remove)
SELECT k.key, coalesce(ARRAY(SELECT json_array_elements_text(k.removals::json)), '{}')
FROM unnest(%(keys)s::text[], %(removals)s::text[]) AS k(key, removals)
ON CONFLICT (key) DO UPDATE
SET version = nextval('cdn_purge_version'),
    then_remove = ARRAY(SELECT DISTINCT unnest(p.then_remove || excluded.then_remove)),
    next_try = now()
