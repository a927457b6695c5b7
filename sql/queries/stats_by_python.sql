-- Downloads over the last %(days)s days by the Python version the installer said it runs on.
SELECT CASE WHEN python = '' THEN 'unknown' ELSE python END, sum(count)::bigint
FROM downloads
WHERE day > current_date - %(days)s::int
GROUP BY 1 ORDER BY 2 DESC, 1;
