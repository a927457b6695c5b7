-- Hand claimed builds back before anyone saw them (the claim's own transaction: its wave was over its
-- budget of expected work): the rows go, so the releases are at the head of the queue again.
DELETE FROM builds
WHERE build_id = ANY(%(build_ids)s) AND status = 'building';
