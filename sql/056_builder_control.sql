-- Per-builder control (piwheels' piw-monitor): sleep, wake, stop the current build.
--
-- builder_sleeps     a Celery worker an operator put to sleep: it was told to stop consuming its
--                    target queues (Celery's cancel_consumer), which it does until woken, and the index
--                    host says so again if it comes back from a restart still consuming them. `queues`
--                    holds the queues it consumed (name, exchange, type, routing key): what waking it
--                    gives back. The key is the worker's Celery name (e.g. pi-kitchen@pi-kitchen).
-- builds.stopped_by  the operator who stopped this build while it ran: whatever its worker reports, it is
--                    recorded as a final failure "stopped by the operator", never retried as transient.

CREATE TABLE builder_sleeps (
    worker    text PRIMARY KEY,
    queues    jsonb NOT NULL,
    reason    text NOT NULL,
    slept_by  text NOT NULL,
    since     timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE builds ADD COLUMN stopped_by text;
