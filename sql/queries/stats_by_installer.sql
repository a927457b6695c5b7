-- Downloads over the last %(days)s days by installer and its version.
SELECT CASE WHEN installer = '' THEN 'other' ELSE installer END, installer_version, sum(count)::bigint
FROM downloads
WHERE day > current_date - %(days)s::int
GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2
LIMIT %(limit)s;
