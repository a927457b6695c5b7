"""The operator's dashboard in the Airflow UI: wheelwright's web app, mounted and linked in the navigation.

Thin on purpose: the app, its authentication and its page live in ``wheelwright.operate.dashboard_app``.
Airflow mounts the app at ``/wheelwright`` without authentication; every route of the app checks the
caller itself (a token or the UI's ``_token`` cookie, then DAG read or edit permission). The nav entry
opens the page inside the UI, in a frame at ``/plugin/wheelwright``, where the UI's cookie signs it in.
"""

from airflow.plugins_manager import AirflowPlugin

from wheelwright.operate.dashboard_app import URL_PREFIX, create_app


class WheelwrightDashboard(AirflowPlugin):
    name = "wheelwright"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "wheelwright dashboard"}]
    external_views = [{
        "name": "Wheelwright",
        "href": f"{URL_PREFIX}/",
        "destination": "nav",
        "url_route": "wheelwright",
    }]
