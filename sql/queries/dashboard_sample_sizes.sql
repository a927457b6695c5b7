-- The published wheels: how many, how many bytes (a pass over wheels: sampled, not run per page).
SELECT count(*), coalesce(sum(size), 0)::bigint FROM wheels;
