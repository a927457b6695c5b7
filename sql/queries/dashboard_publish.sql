-- The publisher's mark (and any CDN purger's: every consumer mark is listed), and how many packages
-- changed since the publisher's mark (an index range over packages.change_seq).
SELECT m.consumer, m.mark, m.updated_at,
       (SELECT count(*) FROM packages p WHERE p.change_seq > m.mark)
FROM consumer_marks m
ORDER BY m.consumer;
