"""How a published split is named to Airflow (Asset events) and to OpenLineage."""

from __future__ import annotations

import hashlib
import os

from airflow.sdk import Asset, AssetAlias

from imagenet_beam import dataset, layout

# Events are attached through an alias so that only the splits a run produced get one.
SPLITS_ALIAS = AssetAlias(name=f"{dataset.DATASET_NAME}_splits")


def _uri(path: str) -> str:
    if "://" in path:
        return path
    return "file://" + os.path.abspath(path)


def split_location(
    version_dir: str, split: str, output: layout.Output = layout.IMAGENET2012
) -> str:
    """A published split: the shards' common prefix (`<version dir>/imagenet2012-<split>`)."""
    return f"{version_dir.rstrip('/')}/{output.shard_prefix(split)}"


def split_asset(
    version_dir: str, split: str, output: layout.Output = layout.IMAGENET2012
) -> Asset:
    """One Asset per split and output location, e.g. imagenet2012/5.1.0/train@file:///…
    (imagenet2012_subset/1pct/5.0.0/train@…, imagenet2012_classic/1.0.0/train@… for the
    other outputs)."""
    return Asset(
        name=f"{output.key}/{output.version}/{split}@{_uri(version_dir)}",
        uri=split_location(_uri(version_dir), split, output),
        group=output.name,
    )


def split_of(asset_name: str) -> str:
    """The split an Asset of split_asset's names stands for."""
    return asset_name.split("@", 1)[0].rsplit("/", 1)[-1]


def shard_digest(shards: list[dict]) -> str:
    """One sha256 standing for every shard's name and sha256, in shard order."""
    text = "".join(f"{s['file']} {s['sha256']}\n" for s in shards)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_extra(version_dir: str, file_format: str, split_info: dict, reprocessed: bool) -> dict:
    return {
        "version_dir": version_dir,
        "file_format": file_format,
        "num_examples": split_info["num_examples"],
        "full_imagenet_examples": split_info["full_imagenet_examples"],
        "num_shards": split_info["num_shards"],
        "num_bytes": split_info["num_bytes"],
        "shards_sha256_digest": shard_digest(split_info["shards"]),
        "reprocessed": reprocessed,
    }
