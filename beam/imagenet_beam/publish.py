"""Making a staged version visible in one step, and knowing what counts as published.

A version is published when its completion marker `_COMPLETE` is there: it lists every
file of the version with its size and holds the sha256 of lineage.json, and it is the last
thing written. Locally the marker is written into staging and one rename shows everything
at once; GCS has no rename, so the files are moved under the final prefix in publication
order (shards, TFDS metadata with dataset_info.json last, lineage.json) and the marker is
written last. Everything of ours that reads a version ignores one without its marker.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from imagenet_beam import layout, storage
from imagenet_beam.layout import COMPLETE_MARKER, DATASET_INFO_FILE, LINEAGE_FILE


class PublishError(ValueError):
    """A version that must not be replaced, or a staging directory that is not complete."""


def is_published(version_dir: str) -> bool:
    """True when the version's publication finished (its completion marker is there)."""
    return storage.exists(storage.join(version_dir, COMPLETE_MARKER))


def completion_record(version_dir: str, output: layout.Output = layout.IMAGENET2012) -> dict:
    """What the marker holds: every file of the version (but itself) with its size, and the
    lineage's sha256, so a reader can tell the marker belongs to the files beside it."""
    prefix = version_dir.rstrip("/") + "/"
    files = {
        path[len(prefix):]: storage.size(path)
        for path in storage.list_files(version_dir)
        if storage.basename(path) != COMPLETE_MARKER
    }
    return {
        "dataset": output.key,
        "version": output.version,
        "lineage_sha256": storage.sha256_of(storage.join(version_dir, LINEAGE_FILE)),
        "files": files,
    }


def write_completion_marker(version_dir: str, record: Mapping) -> None:
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    storage.write_bytes(storage.join(version_dir, COMPLETE_MARKER), text.encode("utf-8"))


def read_completion_marker(version_dir: str) -> dict:
    return json.loads(storage.read_bytes(storage.join(version_dir, COMPLETE_MARKER)))


def existing_version(version_dir: str) -> str | None:
    """What is at the version directory: "published" (ours, complete), "foreign" (a
    dataset_info.json without our lineage, e.g. TFDS's own build) or None (nothing, or what
    a killed publication of ours left behind, which publishing replaces)."""
    if is_published(version_dir):
        return "published"
    if storage.exists(storage.join(version_dir, DATASET_INFO_FILE)) and not storage.exists(
        storage.join(version_dir, LINEAGE_FILE)
    ):
        return "foreign"
    return None


def files_not_ours(version_dir: str) -> list[str]:
    """Files in a version directory that no publication wrote: not listed in its marker
    (or, without one, not named as TFDS or we name a version's files). Never deleted."""
    prefix = version_dir.rstrip("/") + "/"
    present = [p[len(prefix):] for p in storage.list_files(version_dir)]
    if is_published(version_dir):
        try:
            listed = set(read_completion_marker(version_dir)["files"]) | {COMPLETE_MARKER}
            listed |= set(layout.REPORT_FILES)  # `report` may write them after publication
        except (ValueError, KeyError, TypeError):  # a damaged marker lists nothing
            listed = set()
        if listed:
            return sorted(name for name in present if name not in listed)
    return sorted(name for name in present if not layout.is_version_file(name))


def refuse_to_replace(version_dir: str, overwrite: bool) -> None:
    """Refuses to replace another version without `overwrite`, and to delete files that
    are not a version's at all, even with it."""
    foreign_files = files_not_ours(version_dir)
    if foreign_files:
        shown = ", ".join(foreign_files[:10]) + (" …" if len(foreign_files) > 10 else "")
        raise PublishError(
            f"{version_dir} holds files that no conversion wrote ({shown}); replacing the "
            "version would delete them. Move them out of the version directory, then run "
            "again."
        )
    existing = existing_version(version_dir)
    if existing and not overwrite:
        made_by = "a finished conversion" if existing == "published" else "another tool"
        raise PublishError(
            f"{version_dir} already exists ({made_by}); pass --overwrite to replace it"
        )


def _publication_order(paths: list[str]) -> list[list[str]]:
    """Shards first, then TFDS's metadata (dataset_info.json last of it), then lineage.json:
    a reader that looks for dataset_info.json never finds it before the shards."""
    shards_, tfds_meta, info, lineage = [], [], [], []
    for path in paths:
        name = storage.basename(path)
        if name == LINEAGE_FILE:
            lineage.append(path)
        elif name == DATASET_INFO_FILE:
            info.append(path)
        elif layout.is_shard_file(name):
            shards_.append(path)
        else:
            tfds_meta.append(path)
    return [group for group in (shards_, tfds_meta, info, lineage) if group]


def unpublish(version_dir: str) -> None:
    """Removes a version: its marker first (readers ignore it from then on), then
    dataset_info.json (TFDS no longer finds it), then the rest."""
    for name in (COMPLETE_MARKER, DATASET_INFO_FILE):
        path = storage.join(version_dir, name)
        if storage.exists(path):
            storage.delete_files([path])
    storage.delete_tree(version_dir)


def swap_in(staging: str, output: layout.OutputLayout, keep_replaced: bool = False) -> None:
    """Makes the staged version visible, replacing an older one or a killed publication.
    keep_replaced: a local older version is left in `output.replaced_dir` (not a version
    name: TFDS does not read it) for the caller to remove once the new one is out (a DAG
    run's release_lease; the next publication removes it otherwise)."""
    final = output.version_dir
    marker = completion_record(staging, output.output)
    if not storage.is_remote(final):
        write_completion_marker(staging, marker)
        replaced = output.replaced_dir
        if storage.exists(final):
            storage.delete_tree(replaced)
            storage.rename_tree(final, replaced)
        storage.rename_tree(staging, final)
        if not keep_replaced:
            storage.delete_tree(replaced)
        return
    unpublish(final)
    prefix = staging.rstrip("/") + "/"
    for group in _publication_order(storage.list_files(staging)):
        storage.rename_files(group, [storage.join(final, p[len(prefix):]) for p in group])
    write_completion_marker(final, marker)
    storage.delete_tree(staging)


def clear_staged_split(staging: layout.StagingLayout, split: str) -> None:
    """Removes one split's staged files (a previous attempt's), leaving other splits alone."""
    storage.delete_files(
        [p for p in storage.list_files(staging.staging_dir) if staging.belongs_to_split(p, split)]
    )
