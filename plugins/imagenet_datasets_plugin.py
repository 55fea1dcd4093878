"""Airflow plugin: the "ImageNet datasets" page in the UI's navigation and an "ImageNet
dataset" tab on each DAG run (see imagenet_airflow/ui/)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from imagenet_airflow.ui import URL_PREFIX, LazyApp


class ImageNetDatasetsPlugin(AirflowPlugin):
    name = "imagenet_datasets"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "ImageNet datasets"}]
    external_views = [
        {
            "name": "ImageNet datasets",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "imagenet-datasets",
        },
        {
            "name": "ImageNet dataset",
            "href": f"{URL_PREFIX}/runs?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "imagenet-dataset",
        },
    ]
