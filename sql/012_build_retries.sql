-- Transient failures are not final: a build that could not fetch its sdist or build dependencies (a
-- network error, PyPI answering 5xx, the sdist not yet on PyPI's CDN right after an upload) waits and
-- is tried again, with a back-off that grows with each attempt, until it becomes a final failure.
--
-- status 'retry'   the build ended in a transient failure; its release waits until not_before. It counts
--                  as tried for the build queue (so it is not claimed again at once, and later targets
--                  wait for it); once not_before has passed, builds.retries.release_due turns it
--                  into 'lost', which the queue does not count as tried, so the release is claimed again.
-- transient        this build's failure was transient (kept when it turns 'lost': the attempts of a
--                  release on a target are its transient builds plus one).
-- not_before       when a 'retry' build may be tried again.

ALTER TABLE builds DROP CONSTRAINT builds_status_check;
ALTER TABLE builds ADD CONSTRAINT builds_status_check
    CHECK (status IN ('building', 'success', 'failure', 'lost', 'retry'));
ALTER TABLE builds ADD COLUMN transient boolean NOT NULL DEFAULT false;
ALTER TABLE builds ADD COLUMN not_before timestamptz;
CREATE INDEX builds_retry_due ON builds (not_before) WHERE status = 'retry';
