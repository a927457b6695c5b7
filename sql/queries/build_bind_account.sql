-- Bind a build in flight to the builder account that answered it first; a build bound already keeps
-- its account. Returns the account the build is bound to now (NULL: the build is no longer in flight).
WITH bound AS (
    UPDATE builds SET builder_account = %(account)s
    WHERE build_id = %(build_id)s AND status = 'building' AND builder_account IS NULL
    RETURNING builder_account
)
SELECT builder_account FROM bound
UNION ALL
SELECT builder_account FROM builds
WHERE build_id = %(build_id)s AND status = 'building' AND NOT EXISTS (SELECT 1 FROM bound);
