"""Which archives each split needs, and which of them are missing from a manual dir.

One answer for the CLI, the Airflow sensor and the patch-merge step: train needs the train
tar; validation the validation tar; test either the 2019-patched test tar, or the 2012 test
tar together with the patch tar (merged before conversion), or — as TFDS assumes when no
patch is named — the 2012 test tar alone, taken to be patched already.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from imagenet_beam import dataset, storage


@dataclasses.dataclass(frozen=True)
class SplitSource:
    split: str
    archive: str  # path of the archive to convert (for a test split to merge: the 2012 tar)
    patch: str | None = None  # path of the patch tar to merge into `archive` first

    @property
    def paths(self) -> list[str]:
        return [self.archive] + ([self.patch] if self.patch else [])


def _options(split: str, test_patch: str | None) -> list[tuple[str, str | None]]:
    """(archive name, patch name) alternatives for a split, in order of preference."""
    if split == dataset.TRAIN:
        return [(dataset.TRAIN_ARCHIVE, None)]
    if split == dataset.VALIDATION:
        return [(dataset.VALIDATION_ARCHIVE, None)]
    if test_patch:
        return [(dataset.TEST_ARCHIVE_PATCHED, None), (dataset.TEST_ARCHIVE_2012, test_patch)]
    return [(dataset.TEST_ARCHIVE_PATCHED, None), (dataset.TEST_ARCHIVE_2012, None)]


def find_sources(
    manual_dir: str, splits: Sequence[str], test_patch: str | None = None
) -> tuple[dict[str, SplitSource], list[str]]:
    """(split → source found, one line per split that is missing something)."""
    found, missing = {}, []
    for split in splits:
        alternatives = _options(split, test_patch)
        for archive, patch in alternatives:
            paths = [storage.join(manual_dir, n) for n in (archive, patch) if n]
            if all(storage.exists(p) for p in paths):
                found[split] = SplitSource(
                    split, paths[0], paths[1] if patch else None
                )
                break
        else:
            wanted = " or ".join(
                " + ".join(n for n in (archive, patch) if n) for archive, patch in alternatives
            )
            missing.append(f"{split}: {wanted}")
    return found, missing


def missing_message(manual_dir: str, missing: Sequence[str]) -> str:
    lines = "\n".join(f"  {line}" for line in missing)
    return f"missing in {manual_dir}:\n{lines}\n{dataset.DOWNLOAD_INSTRUCTIONS}"
