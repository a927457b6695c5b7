-- Take a bounded chunk of the pending packages into this transaction's derive_set. If the transaction
-- dies, the DELETE rolls back and they stay pending.
WITH taken AS (
    DELETE FROM pending_packages
    WHERE package IN (SELECT package FROM pending_packages ORDER BY package
                      LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    RETURNING package
)
INSERT INTO derive_set (package) SELECT package FROM taken
