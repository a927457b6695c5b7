"""Publishing: the catalog rendered as the static tree pip and people read, and the CDN in front of it.

Owns the page formats (``pages``: pure functions to bytes), the atomic tree (``tree``), the writer that
rewrites exactly what changed (``writer``), the apt-dependency reports, which representation of a
simple page a request gets (``negotiation``), and the CDN purger with the cache rules and surrogate keys
the origin sends (``cdn``). It reads the catalog and never changes what it says, except its own
consumer mark and the purges it owes the CDN.
"""
