-- Access-log lines refused in the last week, by source and reason.
SELECT source, reason, sum(count)::bigint, (array_agg(sample ORDER BY day DESC))[1]
FROM access_log_refusals
WHERE day >= current_date - 6
GROUP BY source, reason
ORDER BY sum(count) DESC;
