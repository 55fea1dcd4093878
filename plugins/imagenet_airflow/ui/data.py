"""What the pages show: published versions from the metadata DB's Asset events, and a
version's lineage, marker and report read through imagenet_beam's storage layer.

No request value becomes a path: a version directory comes from an AssetEvent row that the
DAG's validate_and_record task wrote, and a file is served only when the version's
completion marker lists that exact name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imagenet_airflow import asset_naming
from imagenet_beam import dataset
from imagenet_beam.layout import DATASET_INFO_FILE, LINEAGE_FILE

DAG_ID = "imagenet2012"  # the DAG's id (dags/imagenet2012.py)
# asset_naming.split_asset's names (events attached through an alias get the default group)
ASSET_PREFIX = f"{dataset.DATASET_NAME}/"
REPORT_IMAGE = "report.png"
REPORT_HTML = "report.html"
# Top-level files of a version the pages serve (when its marker lists them); shards are
# the dataset itself and are read with TFDS, not through a browser.
SERVED_TYPES = {
    REPORT_HTML: "text/html; charset=utf-8",
    REPORT_IMAGE: "image/png",
    LINEAGE_FILE: "application/json",
    DATASET_INFO_FILE: "application/json",
    "features.json": "application/json",
    "label.labels.txt": "text/plain; charset=utf-8",
}


@dataclasses.dataclass
class SplitEvent:
    """One split's Asset event: what validate_and_record recorded."""

    event_id: int
    split: str
    extra: dict[str, Any]


@dataclasses.dataclass
class Publication:
    """The split events one run recorded for one version directory."""

    version_dir: str
    run_id: str | None
    timestamp: Any
    splits: list[SplitEvent]

    @property
    def event_id(self) -> int:
        """The event that stands for the publication in URLs (its first split's)."""
        return self.splits[0].event_id

    @property
    def file_format(self) -> str | None:
        return self.splits[0].extra.get("file_format")

    @property
    def reprocessed(self) -> bool:
        return any(s.extra.get("reprocessed") for s in self.splits)


def _events(session: Session, run_id: str | None = None) -> list:
    from airflow.models.asset import AssetEvent, AssetModel

    query = (
        select(AssetEvent, AssetModel.name)
        .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
        .where(AssetEvent.source_dag_id == DAG_ID)
        .where(AssetModel.name.startswith(ASSET_PREFIX))
    )
    if run_id is not None:
        query = query.where(AssetEvent.source_run_id == run_id)
    return list(session.execute(query.order_by(AssetEvent.timestamp, AssetEvent.id)))


def publications(session: Session, run_id: str | None = None) -> list[Publication]:
    """Every (run, version directory) that recorded split events, newest first."""
    by_key: dict[tuple, Publication] = {}
    for event, asset_name in _events(session, run_id):
        extra = event.extra or {}
        version_dir = extra.get("version_dir")
        if not version_dir:
            continue
        key = (event.source_run_id, version_dir)
        pub = by_key.setdefault(
            key, Publication(version_dir, event.source_run_id, event.timestamp, [])
        )
        pub.splits.append(SplitEvent(event.id, asset_naming.split_of(asset_name), extra))
        pub.timestamp = max(pub.timestamp, event.timestamp)
    return sorted(by_key.values(), key=lambda p: p.timestamp, reverse=True)


def version_dir_of_event(session: Session, event_id: int) -> str | None:
    """The version directory an Asset event of the DAG recorded, or None."""
    from airflow.models.asset import AssetEvent, AssetModel

    row = session.execute(
        select(AssetEvent.extra)
        .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
        .where(AssetEvent.id == event_id)
        .where(AssetEvent.source_dag_id == DAG_ID)
        .where(AssetModel.name.startswith(ASSET_PREFIX))
    ).first()
    return (row[0] or {}).get("version_dir") if row else None


def dag_run(session: Session, dag_id: str, run_id: str):
    from airflow.models.dagrun import DagRun

    return session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))


@dataclasses.dataclass
class VersionState:
    """What is at a version directory now: its marker's file list and lineage, or why not."""

    version_dir: str
    files: dict[str, int]
    lineage: Any  # metadata.Lineage
    problem: str | None = None

    @property
    def report_image(self) -> bool:
        return REPORT_IMAGE in self.files

    @property
    def report_html(self) -> bool:
        return REPORT_HTML in self.files


def still_there(pub: Publication, lineage) -> bool:
    """True when the version's shards are the ones the run's events recorded (each split's
    shards' sha256 digest), whether the run converted them or found them up to date."""
    for event in pub.splits:
        split = lineage.splits.get(event.split)
        if split is None:
            return False
        shards = [dataclasses.asdict(s) for s in split.shards]
        if asset_naming.shard_digest(shards) != event.extra.get("shards_sha256_digest"):
            return False
    return True


def read_version(version_dir: str) -> VersionState:
    """The version's completion marker and lineage.json (local or gs://)."""
    from imagenet_beam import metadata, publish

    try:
        if not publish.is_published(version_dir):
            return VersionState(version_dir, {}, None,
                                "not published any more: no completion marker")
        files = dict(publish.read_completion_marker(version_dir).get("files") or {})
        lineage = metadata.read_lineage(version_dir)
    except Exception as e:  # noqa: BLE001 - the page says what is wrong instead of a 500
        return VersionState(version_dir, {}, None,
                            f"cannot be read: {type(e).__name__}: {e}")
    return VersionState(version_dir, files, lineage)


def servable(version_dir: str, name: str) -> bool:
    """True when `name` is a file the pages serve and the version's marker lists it."""
    from imagenet_beam import publish

    if name not in SERVED_TYPES:
        return False
    try:
        if not publish.is_published(version_dir):
            return False
        listed = publish.read_completion_marker(version_dir).get("files") or {}
    except Exception:  # noqa: BLE001 - unreadable marker: serve nothing
        return False
    return name in listed


def read_file(version_dir: str, name: str) -> bytes:
    from imagenet_beam import storage

    return storage.read_bytes(storage.join(version_dir, name))
