-- Every package derivation owes a fold: marked pending, or with journal rows past the derived mark
-- (a rename's row belongs to both names' histories). An empty range is not looked for: during a bulk
-- replay the journal may have no key to look it up by.
SELECT package FROM pending_packages
UNION
SELECT package FROM journal WHERE %(after)s < %(upto)s AND serial > %(after)s AND serial <= %(upto)s
UNION
SELECT other_package FROM journal
WHERE %(after)s < %(upto)s AND serial > %(after)s AND serial <= %(upto)s AND other_package IS NOT NULL
