-- The result of a build in flight. A transient failure ('retry') says when it may be tried again. A
-- build an operator stopped (stopped_by) that did not succeed is a final failure saying so, whatever
-- its worker reported.
UPDATE builds
SET status = CASE WHEN stopped_by IS NOT NULL AND %(status)s::text <> 'success' THEN 'failure'
                  ELSE %(status)s::text END,
    reason = CASE WHEN stopped_by IS NOT NULL AND %(status)s::text <> 'success'
                  THEN 'stopped by the operator (' || stopped_by || ')' ELSE %(reason)s::text END,
    builder = %(builder)s, duration = %(duration)s,
    finished_at = now(), log_path = %(log_path)s,
    transient = %(transient)s AND stopped_by IS NULL,
    not_before = CASE WHEN stopped_by IS NULL THEN %(not_before)s::timestamptz END
WHERE build_id = %(build_id)s AND status = 'building';
