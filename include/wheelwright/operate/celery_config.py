"""Airflow's Celery configuration, plus wheelwright's worker commands: ``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS``.

Every Airflow process of a deployment (``wheelwright run``, the compose stack, a Pi's worker) sets
``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=wheelwright.operate.celery_config.CELERY_CONFIG``: Airflow's
own defaults, unchanged, and one more module the worker imports when it starts,
:mod:`wheelwright.builds.worker_control`, which adds the operator's commands (which builds run, stop the
current one) to the worker's remote control. A worker without it still builds; it only cannot be told
to stop a build (``wheelwright builder stop-build`` then says it did not answer).
"""

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from wheelwright.builds.build_settings import MAX_TIMEOUT

WORKER_CONTROL = "wheelwright.builds.worker_control"
# Redis hands a task that is not acknowledged within the visibility timeout to another worker, which
# builds it again while the first still does. Airflow's default is a day; a package's build settings
# may allow up to MAX_TIMEOUT (numpy-class builds under emulation), so the broker waits longer.
VISIBILITY_TIMEOUT = int(MAX_TIMEOUT + 6 * 3600)
CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG,
                 "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), WORKER_CONTROL),
                 "broker_transport_options": {**DEFAULT_CELERY_CONFIG.get("broker_transport_options", {}),
                                              "visibility_timeout": VISIBILITY_TIMEOUT}}
