"""What the split Assets are for: the example DAG `imagenet2012_consumer` reads a batch of
each newly published split through TFDS, as a training job would.

`latest_versions` needs only the events; `read_batch` imports TensorFlow and TFDS, so the
DAG file imports neither at parse time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from imagenet_airflow import asset_naming

log = logging.getLogger(__name__)

BATCH_SIZE = 64
IMAGE_SIZE = 224  # the batch's images are resized to this square, as a model takes them


def latest_versions(events: Iterable) -> dict[str, str]:
    """split → version directory of the newest triggering event per split that a conversion
    published (events: the Task SDK's AssetEventDagRunReference results,
    `triggering_asset_events[alias]`). A run that found its version up to date records
    events too (`reprocessed` false): nothing new to read there."""
    newest: dict[str, tuple] = {}
    for event in events:
        extra = event.extra or {}
        split = asset_naming.split_of(event.asset.name)
        if not extra.get("version_dir"):
            continue
        if not extra.get("reprocessed"):
            log.info("%s: %s was found up to date by %s, not published anew: not read", split,
                     extra["version_dir"], event.source_run_id)
            continue
        if split not in newest or event.timestamp > newest[split][0]:
            newest[split] = (event.timestamp, extra["version_dir"])
    return {split: newest[split][1] for split in sorted(newest)}


def read_batch(version_dir: str, split: str, batch_size: int = BATCH_SIZE,
               image_size: int = IMAGE_SIZE) -> dict:
    """The first batch of a split as a model would take it: `tfds.builder_from_directory`,
    images resized to image_size², batched. Returns its shapes, dtypes and label range."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(version_dir)
    ds = builder.as_dataset(split=split, shuffle_files=False)
    first_shapes = [list(ex["image"].shape) for ex in ds.take(3)]
    batches = ds.map(
        lambda ex: (tf.image.resize(ex["image"], (image_size, image_size)), ex["label"])
    ).batch(batch_size)
    images, labels = next(iter(tfds.as_numpy(batches.take(1))))
    info = {
        "version_dir": version_dir,
        "num_examples": builder.info.splits[split].num_examples,
        "images": [list(images.shape), str(images.dtype)],
        "labels": [list(labels.shape), str(labels.dtype)],
        "label_min": int(labels.min()),
        "label_max": int(labels.max()),
        "first_image_shapes": first_shapes,
    }
    log.info(
        "%s: a batch of %d from %s (%d examples): images %s %s, labels %s %s in [%d, %d]; "
        "the first images as stored: %s",
        split, len(labels), version_dir, info["num_examples"], tuple(images.shape),
        images.dtype, tuple(labels.shape), labels.dtype, info["label_min"], info["label_max"],
        ", ".join(str(tuple(s)) for s in first_shapes),
    )
    return info


def read_batches(events: Iterable, batch_size: int = BATCH_SIZE) -> dict[str, dict]:
    versions = latest_versions(events)
    if not versions:
        log.info("no newly published split among the triggering events: nothing to read "
                 "(the DAG runs when imagenet2012 records its splits)")
    return {split: read_batch(vdir, split, batch_size) for split, vdir in versions.items()}


def events_of(triggering_asset_events: Mapping, alias) -> list:
    """The triggering events that came through the alias (none for a manual run)."""
    try:
        return list(triggering_asset_events[alias])
    except KeyError:
        return []
