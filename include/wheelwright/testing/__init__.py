"""Doubles for what cannot run here, shipped so that ``make run`` works offline: not part of the product.

``pypi_double`` stands in for PyPI over its own protocols. Only the operator's explicit choice of it
(``wheelwright run --pypi double``, ``wheelwright pypi-double``) imports it, lazily; no rule lives here.
"""
