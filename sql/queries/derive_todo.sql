-- Every package derivation owes a fold: marked pending, or with journal rows past the derived mark
-- (a rename's row belongs to both names' histories).
SELECT package FROM pending_packages
UNION
SELECT package FROM journal WHERE serial > %(after)s AND serial <= %(upto)s
UNION
SELECT other_package FROM journal
WHERE serial > %(after)s AND serial <= %(upto)s AND other_package IS NOT NULL
