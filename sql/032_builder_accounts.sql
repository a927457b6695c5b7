-- Which builder answered a build, as the index host knows it.
--
-- builds.builder_account   the SFTP account the build is bound to: the account whose own folder
--                          (<incoming>/<account>/<build_id>/) first held an answer for it (an outcome or
--                          a hand-back). The folder's place is decided by the SSH login, never by
--                          anything a builder writes; once bound, files, outcomes and hand-backs for
--                          the build from any other account are refused. NULL until then (and for
--                          builds made before accounts were recorded).

ALTER TABLE builds ADD COLUMN builder_account text;
