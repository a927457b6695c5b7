"""wheelwright: wheels of every PyPI release for Raspberry Pi targets, served as a static pip index.

The package holds all the logic and imports without Airflow; the DAGs in dags/ only wire its
functions into tasks. See DESIGN.md for the shape of the whole.
"""
