-- Downloads per day over the last 30 days.
SELECT day, sum(count)
FROM downloads
WHERE day >= current_date - 29
GROUP BY day ORDER BY day;
