-- Downloads over the last %(days)s days by the target that built the file (a pure wheel serves every
-- target: it is counted as "pure"); a file of no known target keeps its tags.
SELECT CASE WHEN d.abi_tag = 'none' AND d.platform_tag = 'any' THEN 'pure'
            ELSE coalesce(t.name, d.abi_tag || '-' || d.platform_tag) END AS target,
       sum(d.count)::bigint
FROM downloads d
LEFT JOIN targets t ON t.abi = d.abi_tag AND t.platform = d.platform_tag
WHERE d.day > current_date - %(days)s::int
GROUP BY 1 ORDER BY 2 DESC, 1;
