"""Publishing: the catalog rendered as the static tree pip and people read.

Owns the page formats (``pages``: pure functions to bytes), the atomic tree (``tree``), the writer that
rewrites exactly what changed (``writer``), and the apt-dependency reports. It reads the catalog and never
changes what it says, except its own consumer mark.
"""
