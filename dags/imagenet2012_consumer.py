"""
### Using the published ImageNet splits (an example)

Scheduled on the `imagenet2012_splits` Asset alias: it runs whenever `imagenet2012`'s
`validate_and_record` publishes (or re-validates) splits, and reads the first batch of each
split it was triggered for through TFDS (`tfds.builder_from_directory` on the version
directory from the event's extra), images resized to 224×224. Its log and XCom give the
batch's shapes and label range. Replace `read_batches` with your training job.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from imagenet_airflow.asset_naming import SPLITS_ALIAS


@dag(
    dag_id="imagenet2012_consumer",
    doc_md=__doc__,
    schedule=SPLITS_ALIAS,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,  # it is cheap, and shows at once what the Assets are for
    tags=["imagenet", "tfds", "example"],
)
def imagenet2012_consumer():
    @task
    def read_batches(triggering_asset_events=None) -> dict:
        """A batch of each split the triggering events name: shapes and label range."""
        from imagenet_airflow import consumer

        return consumer.read_batches(consumer.events_of(triggering_asset_events, SPLITS_ALIAS))

    read_batches()


imagenet2012_consumer()
