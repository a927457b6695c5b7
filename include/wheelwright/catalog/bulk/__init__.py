"""The first replay of PyPI's whole history, fast: the catalog's rules again, set-based, in data frames.

Everything here has a row-by-row twin in ``catalog`` (``frames`` ↔ ``events.parse_row``, ``fold`` ↔
``catalog.fold``) and exists only for speed at tens of millions of events; property tests hold each pair
to the same results. A change of meaning goes to the twin first, then here.
"""
