-- PyPI events of the last hour, from the tail of the journal (a bounded backwards walk of its key).
SELECT count(*)
FROM (SELECT ts FROM journal ORDER BY serial DESC LIMIT 200000) tail
WHERE ts >= extract(epoch FROM now() - interval '1 hour');
