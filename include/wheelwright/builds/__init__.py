"""Builds: from a release in the catalog to a checked wheel on the index host.

Owns the targets (what we build for), the build queue (what each target builds next, handed out once), the
builder (``pip wheel`` of hostile code in a sandbox, on a worker), wheel analysis, the transfer to the
index host over SFTP, and intake (the index host recording a build, trusting nothing the worker said).
It never writes the published tree's pages: publishing reads the catalog after intake.
"""
