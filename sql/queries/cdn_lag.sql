-- How far the CDN is behind the published tree: purges owed, and the age of the oldest (seconds).
SELECT count(*), coalesce(extract(epoch FROM now() - min(owed_since)), 0)::float8,
       coalesce(max(attempts), 0)
FROM cdn_purges
