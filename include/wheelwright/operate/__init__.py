"""Running wheelwright: the command line, operator decisions, Airflow around the package, local servers.

Owns the ``wheelwright`` command and its exit codes, skip/unskip/rebuild, starting the whole system on one
machine (``launcher``, ``airflow_setup``), the seam between Airflow tasks and the package (``dag_tasks``),
and the small static and SFTP servers used where nginx or OpenSSH are not. Rules live in the other rooms;
this one only calls them.
"""
