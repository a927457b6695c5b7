-- PyPI events per hour over the last day, from the tail of the journal (a backwards walk of its
-- primary key, bounded: a day of PyPI is tens of thousands of events).
SELECT date_trunc('hour', to_timestamp(ts)) AS hour, count(*)
FROM (SELECT ts FROM journal ORDER BY serial DESC LIMIT 200000) tail
WHERE ts >= extract(epoch FROM now() - interval '24 hours')
GROUP BY 1 ORDER BY 1;
