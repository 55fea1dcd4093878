"""How a published split is named and described to Airflow (Asset events) and in XCom."""

from __future__ import annotations

import hashlib
import os

from airflow.sdk import Asset, AssetAlias

# Events are attached through an alias so that only the splits a run produced get one.
SPLITS_ALIAS = AssetAlias(name="imagenet2012_splits")


def _uri(path: str) -> str:
    if "://" in path:
        return path
    return "file://" + os.path.abspath(path)


def split_asset(version_dir: str, split: str) -> Asset:
    """One Asset per split and output location, e.g. imagenet2012/5.1.0/train."""
    return Asset(
        name=f"imagenet2012/5.1.0/{split}@{_uri(version_dir)}",
        uri=f"{_uri(version_dir)}/imagenet2012-{split}",
        group="imagenet2012",
    )


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
