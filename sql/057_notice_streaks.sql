-- Failure notices (operate/notices.py): consecutive failures of one subject, reset by a success.
--
-- subject      dag:<dag_id> (its runs) or target:<name> (the builds recorded for it)
-- failures     how many in a row, up to now (0: it succeeds)
-- notified     the operator was told that it keeps failing; told again only when it recovers
-- last_detail  the latest failure, in one line
-- since        when the current streak began

CREATE TABLE notice_streaks (
    subject      text PRIMARY KEY,
    failures     integer NOT NULL DEFAULT 0,
    notified     boolean NOT NULL DEFAULT false,
    last_detail  text,
    since        timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
