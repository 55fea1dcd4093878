"""The Kaggle "ImageNet Object Localization Challenge" copy, extracted.

    MANUAL_DIR/ILSVRC/Data/CLS-LOC/train/<wnid>/<wnid>_<n>.JPEG
    MANUAL_DIR/ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_<n>.JPEG     (flat)
    MANUAL_DIR/ILSVRC/Data/CLS-LOC/test/ILSVRC2012_test_<n>.JPEG   (the 2019-patched set)
    MANUAL_DIR/LOC_synset_mapping.txt, LOC_val_solution.csv

Validation images are labelled by their number, from TFDS's validation labels; Kaggle's
own label (the first wnid of each row's PredictionString in LOC_val_solution.csv) must
agree (see `tree.TreeSource`).
"""

from __future__ import annotations

import csv
import functools
import io

from imagenet_beam import dataset, storage
from imagenet_beam.sources.tar import ArchiveError
from imagenet_beam.sources.tree import Folder, TreeSource

DATA_DIR = "ILSVRC/Data/CLS-LOC"
SYNSET_MAPPING = "LOC_synset_mapping.txt"
VALIDATION_SOLUTION = "LOC_val_solution.csv"
SPLIT_FOLDERS = {dataset.TRAIN: "train", dataset.VALIDATION: "val", dataset.TEST: "test"}


@functools.lru_cache(maxsize=4)
def validation_solution(path: str) -> dict[str, str]:
    """ImageId → the wnid Kaggle gives it (the first of its PredictionString)."""
    try:
        text = storage.read_bytes(path).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ArchiveError(f"{path} cannot be read ({e}): download it again") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
        raise ArchiveError(
            f"{path} does not start with the header ImageId,PredictionString: is this "
            "Kaggle's LOC_val_solution.csv?"
        )
    solution = {}
    for number, row in enumerate(reader, start=2):
        if not row:
            continue
        words = row[1].split() if len(row) > 1 else []
        if not words:
            raise ArchiveError(f"{path} line {number}: no wnid in its PredictionString")
        solution[row[0].strip()] = words[0]
    return solution


class KaggleSource(TreeSource):
    name = "kaggle"
    title = "the Kaggle ImageNet Object Localization Challenge copy"
    instructions = (
        "For the Kaggle copy, point manual_dir at the folder holding ILSVRC/ (with "
        f"{DATA_DIR}/train/, val/ and test/), {SYNSET_MAPPING} and {VALIDATION_SOLUTION}."
    )

    def split_folders(self, manual_dir: str, split: str) -> list[str]:
        return [storage.join(manual_dir, DATA_DIR, SPLIT_FOLDERS[split])]

    def present(self, manual_dir: str) -> bool:
        return storage.exists(storage.join(manual_dir, SYNSET_MAPPING)) or super().present(
            manual_dir
        )

    def find(self, manual_dir, splits, test_patch=None, test_archive=None):
        found, missing = super().find(manual_dir, splits, test_patch, test_archive)
        solution = storage.join(manual_dir, VALIDATION_SOLUTION)
        if dataset.VALIDATION in found and not storage.exists(solution):
            del found[dataset.VALIDATION]
            missing.append(f"validation: {VALIDATION_SOLUTION} (beside ILSVRC/)")
        return found, missing

    def describe_missing(self, split: str, wanted: str) -> str:
        return f"a folder {DATA_DIR}/{wanted}"

    def _solution_path(self, folder: Folder) -> str:
        # .../ILSVRC/Data/CLS-LOC/val → the manual dir is three folders up from CLS-LOC
        root = folder.path.rstrip("/")
        for _ in range(4):
            root = root.rsplit("/", 1)[0]
        return storage.join(root, VALIDATION_SOLUTION)

    def layout_wnid(self, split: str, file_name: str, folder: Folder) -> str | None:
        solution = validation_solution(self._solution_path(folder))
        stem = file_name.rsplit(".", 1)[0]
        wnid = solution.get(stem)
        if wnid is None:
            raise ArchiveError(
                f"{file_name} has no row in {self._solution_path(folder)}: is the copy "
                "complete?"
            )
        return wnid

    def where_label(self, folder: Folder) -> str:
        return self._solution_path(folder)
