"""The "ImageNet datasets" pages in the Airflow UI (see imagenet_datasets_plugin.py).

data.py finds versions in the metadata DB and reads them through imagenet_beam's storage
layer, pages.py renders HTML, app.py is the FastAPI app behind Airflow's own auth.
"""

from __future__ import annotations

URL_PREFIX = "/imagenet-datasets"


class LazyApp:
    """The FastAPI app as an ASGI app that imports it on its first request.

    Every Airflow process loads the plugins (each task too, for macros); only the API
    server serves requests, so only it pays for importing the app and Airflow's API
    security module (about a second elsewhere)."""

    def __init__(self):
        self._app = None

    async def __call__(self, scope, receive, send):
        if self._app is None:
            from imagenet_airflow.ui.app import app

            self._app = app
        await self._app(scope, receive, send)
