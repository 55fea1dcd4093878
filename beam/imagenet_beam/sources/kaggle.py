"""The Kaggle "ImageNet Object Localization Challenge" copy, extracted or as its .tar.gz.

    MANUAL_DIR/ILSVRC/Data/CLS-LOC/train/<wnid>/<wnid>_<n>.JPEG
    MANUAL_DIR/ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_<n>.JPEG     (flat)
    MANUAL_DIR/ILSVRC/Data/CLS-LOC/test/ILSVRC2012_test_<n>.JPEG   (the 2019-patched set)
    MANUAL_DIR/LOC_synset_mapping.txt, LOC_val_solution.csv

    or MANUAL_DIR/imagenet_object_localization_patched2019.tar.gz, holding all of the above

Validation images are labelled by their number, from TFDS's validation labels; Kaggle's
own label (the first wnid of each row's PredictionString in LOC_val_solution.csv) must
agree (see `tree.TreeSource`). The .tar.gz is a gzip stream: it is unpacked once (see
`packed`), its LOC_val_solution.csv read on the way. The extracted tree and the .tar.gz
both in manual_dir is refused.
"""

from __future__ import annotations

import csv
import functools
import io
import posixpath

from imagenet_beam import dataset, storage
from imagenet_beam.sources.base import MemberRef, SplitInput
from imagenet_beam.sources.packed import (
    PACKED_SUFFIX,
    Image,
    PackedSource,
    Stray,
    is_wnid,
    stray_name,
)
from imagenet_beam.sources.tar import ArchiveError
from imagenet_beam.sources.tree import Folder, TreeSource

DATA_DIR = "ILSVRC/Data/CLS-LOC"
SYNSET_MAPPING = "LOC_synset_mapping.txt"
VALIDATION_SOLUTION = "LOC_val_solution.csv"
ARCHIVE = "imagenet_object_localization_patched2019.tar.gz"
SPLIT_FOLDERS = {dataset.TRAIN: "train", dataset.VALIDATION: "val", dataset.TEST: "test"}
FOLDER_SPLITS = {folder: split for split, folder in SPLIT_FOLDERS.items()}


@functools.lru_cache(maxsize=4)
def validation_solution(path: str) -> dict[str, str]:
    """ImageId → the wnid Kaggle gives it (the first of its PredictionString)."""
    try:
        text = storage.read_bytes(path).decode("utf-8")
    except OSError as e:
        raise ArchiveError(f"{path} cannot be read ({e}): download it again") from None
    return parse_solution(text, path)


def parse_solution(data: bytes | str, path: str) -> dict[str, str]:
    """LOC_val_solution.csv's ImageId → wnid; `path` names the file in messages."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as e:
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


class KaggleSource(TreeSource, PackedSource):
    name = "kaggle"
    title = "the Kaggle ImageNet Object Localization Challenge copy"
    instructions = (
        "For the Kaggle copy, point manual_dir at the folder holding ILSVRC/ (with "
        f"{DATA_DIR}/train/, val/ and test/), {SYNSET_MAPPING} and {VALIDATION_SOLUTION}, "
        f"or holding {ARCHIVE} as downloaded (not extracted)."
    )

    def configured(self, settings) -> KaggleSource:
        return self.configure_packed(TreeSource.configured(self, settings), settings)  # type: ignore[return-value]

    def split_folders(self, manual_dir: str, split: str) -> list[str]:
        return [storage.join(manual_dir, DATA_DIR, SPLIT_FOLDERS[split])]

    def present(self, manual_dir: str) -> bool:
        return (
            storage.exists(storage.join(manual_dir, SYNSET_MAPPING))
            or storage.exists(storage.join(manual_dir, ARCHIVE))
            or super().present(manual_dir)
        )

    def find(self, manual_dir, splits, test_patch=None, test_archive=None):
        found, missing = super().find(manual_dir, splits, test_patch, test_archive)
        solution = storage.join(manual_dir, VALIDATION_SOLUTION)
        if dataset.VALIDATION in found and not storage.exists(solution):
            del found[dataset.VALIDATION]
            missing.append(f"validation: {VALIDATION_SOLUTION} (beside ILSVRC/)")
        packed = storage.join(manual_dir, ARCHIVE)
        if not storage.exists(packed):
            return found, missing
        for split in splits:
            if split == dataset.TEST and test_archive:
                continue
            extracted = [p for p in self.split_folders(manual_dir, split) if storage.is_dir(p)]
            if extracted:
                raise ArchiveError(
                    f"{manual_dir} holds the Kaggle copy's {split} split twice, extracted in "
                    f"{extracted[0]} and packed in {packed}: keep one of them (move the other "
                    "out)"
                )
            found[split] = SplitInput(split, packed, layout=self.name, files=(packed,))
        missing = [line for line in missing if line.split(":", 1)[0] not in found]
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

    # --- the .tar.gz ---------------------------------------------------------------------

    def check(self, split_input, settings, cache_dir):
        if self.packed_archives(split_input):
            return []  # checked as it is unpacked (`packed.unpack_inputs`)
        return super().check(split_input, settings, cache_dir)

    def checked_before(self, split_input, settings, cache_dir):
        if self.packed_archives(split_input):
            return True
        return super().checked_before(split_input, settings, cache_dir)

    def work_items(self, split, path):
        if path.endswith(PACKED_SUFFIX):
            return self.packed_work_items(split, path)
        return super().work_items(split, path)

    def index(self, item) -> list[MemberRef]:
        if isinstance(item[2], dict):
            return self.packed_index(item)
        return super().index(item)

    def origin(self, ref: MemberRef) -> str:
        return PackedSource.origin(self, ref)

    def packed_archives(self, split_input: SplitInput) -> list[str]:
        return [split_input.archive] if split_input.archive.endswith(PACKED_SUFFIX) else []

    def archives_of(self, split: str, path: str) -> list[str]:
        return [path]

    def classify(self, archive: str, name: str) -> Image | Stray | None:
        if not name.startswith(DATA_DIR + "/"):
            return None  # annotations, the LOC_* tables
        folder, _, inside = name[len(DATA_DIR) + 1 :].partition("/")
        split = FOLDER_SPLITS.get(folder)
        if split is None or not inside:
            return None
        stray = stray_name(inside)
        if stray is not None:
            return Stray(split, stray)
        parts = inside.split("/")
        if split == dataset.TRAIN:
            if len(parts) != 2:
                raise ArchiveError(
                    f"{archive}: member {name} is not in a class folder: train images lie in "
                    f"{DATA_DIR}/train/<wnid>/; is this the Kaggle copy's archive?"
                )
            if not is_wnid(parts[0]):
                raise ArchiveError(
                    f"{archive}: member {name}: {parts[0]}/ is no ILSVRC 2012 class (its name "
                    "is not one of the 1000 wnids); is this the Kaggle copy's archive?"
                )
            return Image(split, parts[1], parts[0])
        if len(parts) != 1:
            raise ArchiveError(
                f"{archive}: member {name}: {split} images lie flat in {DATA_DIR}/{folder}/; "
                "is this the Kaggle copy's archive?"
            )
        return Image(split, parts[0], None)

    def keep(self, archive: str, name: str) -> bool:
        return name == VALIDATION_SOLUTION

    def defers(self, split: str) -> bool:
        return split == dataset.VALIDATION

    def resolve(self, archive, split, rows, kept) -> None:
        if split != dataset.VALIDATION:
            return
        where = f"{VALIDATION_SOLUTION} in {archive}"
        if VALIDATION_SOLUTION not in kept:
            raise ArchiveError(
                f"{archive} holds no {VALIDATION_SOLUTION}, which labels its validation "
                "images: is it the Kaggle copy's archive, complete?"
            )
        solution = parse_solution(kept[VALIDATION_SOLUTION], where)
        for row in rows:
            wnid = solution.get(posixpath.splitext(row[2])[0])
            if wnid is None:
                raise ArchiveError(f"{row[2]} has no row in {where}: is the archive complete?")
            row[3] = wnid

    def where_packed_label(self, archive: str, file_name: str, wnid: str) -> str:
        return f"{VALIDATION_SOLUTION} in {archive}"
