"""Builds: from a release in the catalog to a checked wheel on the index host.

Owns the targets (what we build for), the build queue (what each target builds next, handed out once), the
builder (``pip wheel`` of hostile code in a sandbox, on a disk of its own, its tree removed by
the one remover of trees from outside), wheel analysis, the transfer to the
index host over SFTP, the incoming folder (each build's outcome arrives with its files, and a sweep records
what no record step took), intake (the index host recording a build, trusting nothing the worker said),
retries (a transient failure waits and is claimed again) and local_build (``wheelwright build``: one
release built here through all of the above, as a worker would).
It never writes the published tree's pages: publishing reads the catalog after intake.
"""
