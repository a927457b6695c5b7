"""The catalog: PyPI's journal in, the state of every package out.

Owns the database (schema, connections, the embedded server), what a changelog row says (``events``), what
a package's history means (``fold``), storing and deriving (``store``), following PyPI (``sync``), what the
changelog does not say (``enrich``), and the status snapshot. ``bulk/`` is the first replay's fast path:
the same semantics, set-based, held equal to ``fold`` by property tests. Nothing here builds or publishes;
builds and publishing read the catalog's change marks.
"""
