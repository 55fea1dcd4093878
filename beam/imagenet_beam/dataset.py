"""The facts of ILSVRC 2012 and of TFDS's `imagenet2012` that the pipeline is built on.

Sources: the TFDS `imagenet2012` builder (tensorflow-datasets 4.9.10) and the published
checksums (see shared/ILSVRC2012.md). The 1000 class ids and the 50,000 validation labels
are read from the installed TFDS package, so there is one source of truth for them.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import re

DATASET_NAME = "imagenet2012"
VERSION = "5.1.0"

TRAIN = "train"
VALIDATION = "validation"
TEST = "test"
SPLITS = (TRAIN, VALIDATION, TEST)

TRAIN_ARCHIVE = "ILSVRC2012_img_train.tar"
VALIDATION_ARCHIVE = "ILSVRC2012_img_val.tar"
TEST_ARCHIVE_PATCHED = "ILSVRC2012_img_test_v10102019.tar"
TEST_ARCHIVE_2012 = "ILSVRC2012_img_test.tar"
DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"

# The bounding boxes (optional; Pascal VOC XML, one file per annotated image). Train:
# `<wnid>/<wnid>_<n>.xml` (tensorflow/models research/inception: download_imagenet.sh unpacks
# it, process_bounding_boxes.py reads <dir>/*/*.xml); validation: `val/ILSVRC2012_val_<n>.xml`.
BBOX_TRAIN_ARCHIVE = "ILSVRC2012_bbox_train_v2.tar.gz"
BBOX_VALIDATION_ARCHIVE = "ILSVRC2012_bbox_val_v3.tgz"
BBOX_ARCHIVES = {TRAIN: BBOX_TRAIN_ARCHIVE, VALIDATION: BBOX_VALIDATION_ARCHIVE}
# md5 as image-net.org's 2012 download page lists them ("20MB", "2.2MB"; quoted alike by
# several copies of that page). No sha256 or exact size is published, so they are not in
# PUBLISHED_ARCHIVES: archive_checks records every archive's md5, to compare by hand.
BBOX_PUBLISHED_MD5 = {
    BBOX_TRAIN_ARCHIVE: "9271167e2176350e65cfe4e546f14b17",
    BBOX_VALIDATION_ARCHIVE: "f4cd18b5ea29fe6bbea62ec9c20d80f0",
}
# What process_bounding_boxes.py reports for the train archive (its docstring).
BBOX_TRAIN_XML_FILES = 544_546
BBOX_TRAIN_BOXES = 615_299

NUM_CLASSES = 1000
FULL_SPLIT_SIZES = {TRAIN: 1_281_167, VALIDATION: 50_000, TEST: 100_000}

TEST_LABEL = -1

DOWNLOAD_INSTRUCTIONS = (
    "The ILSVRC 2012 archives cannot be downloaded automatically: register at "
    "https://image-net.org/download-images, download them by hand and put them in the "
    "manual directory."
)


@dataclasses.dataclass(frozen=True)
class PublishedArchive:
    """A tarball as image-net.org publishes it (size None where it is unconfirmed)."""

    name: str
    size: int | None
    md5: str
    sha256: str


PUBLISHED_ARCHIVES = {
    a.name: a
    for a in (
        PublishedArchive(
            TRAIN_ARCHIVE,
            147_897_477_120,
            "1d675b47d978889d74fa0da5fadfb00e",
            "b08200a27a8e34218a0e58fde36b0fe8f73bc377f4acea2d91602057c3ca45bb",
        ),
        PublishedArchive(
            VALIDATION_ARCHIVE,
            6_744_924_160,
            "29b22e2961454d5413ddabcf34fc5622",
            "c7e06a6c0baccf06d8dbeb6577d71efff84673a5dbdd50633ab44f8ea0456ae0",
        ),
        PublishedArchive(
            TEST_ARCHIVE_PATCHED,
            None,
            "e1b8681fff3d63731c599df9b4b6fc02",
            "9cf7f8249639510f17d3d8a0deb47cd22a435886ba8e29e2b3223e65a4079eb4",
        ),
        PublishedArchive(
            DEVKIT_ARCHIVE,
            None,
            "fa75699e90414af021442c21a62c3abf",
            "b59243268c0d266621fd587d2018f69e906fb22875aca0e295b48cafaa927953",
        ),
    )
}

# The train images TFDS re-encodes by name (its CMYK_IMAGES and PNG_IMAGES lists). We
# find such images by content; these names are kept to report where we agree with TFDS.
TFDS_CMYK_NAMES = frozenset(
    {
        "n01739381_1309.JPEG",
        "n02077923_14822.JPEG",
        "n02447366_23489.JPEG",
        "n02492035_15739.JPEG",
        "n02747177_10752.JPEG",
        "n03018349_4028.JPEG",
        "n03062245_4620.JPEG",
        "n03347037_9675.JPEG",
        "n03467068_12171.JPEG",
        "n03529860_11437.JPEG",
        "n03544143_17228.JPEG",
        "n03633091_5218.JPEG",
        "n03710637_5125.JPEG",
        "n03961711_5286.JPEG",
        "n04033995_2932.JPEG",
        "n04258138_17003.JPEG",
        "n04264628_27969.JPEG",
        "n04336792_7448.JPEG",
        "n04371774_5854.JPEG",
        "n04596742_4225.JPEG",
        "n07583066_647.JPEG",
        "n13037406_4650.JPEG",
    }
)
TFDS_PNG_NAMES = frozenset({"n02105855_2933.JPEG"})

VALIDATION_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")


def test_archive_candidates() -> tuple[str, str]:
    """Test archives in order of preference: the 2019-patched one, then the 2012 name."""
    return (TEST_ARCHIVE_PATCHED, TEST_ARCHIVE_2012)


def _tfds_dataset_dir() -> str:
    """The imagenet2012 folder of the installed TFDS, found without importing TFDS."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "tensorflow-datasets is not installed; it provides ImageNet's label files. "
            "Install the project's requirements.txt."
        )
    root = list(spec.submodule_search_locations)[0]
    return os.path.join(root, "datasets", DATASET_NAME)


def _read_lines(name: str) -> list[str]:
    with open(os.path.join(_tfds_dataset_dir(), name), encoding="utf-8") as f:
        return f.read().strip().splitlines()


def labels_file_path() -> str:
    """TFDS's labels.txt: the 1000 wnids in sorted order; the class id is the line number."""
    return os.path.join(_tfds_dataset_dir(), "labels.txt")


@functools.cache
def class_names() -> tuple[str, ...]:
    names = tuple(_read_lines("labels.txt"))
    if len(names) != NUM_CLASSES:
        raise RuntimeError(f"TFDS's labels.txt has {len(names)} classes, expected {NUM_CLASSES}")
    return names


@functools.cache
def class_index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(class_names())}


@functools.cache
def validation_wnids() -> tuple[str, ...]:
    """Line i is the wnid of ILSVRC2012_val_<i+1>.JPEG (TFDS's validation_labels.txt)."""
    return tuple(_read_lines("validation_labels.txt"))


def validation_label(file_name: str) -> int:
    """The class id of a validation image, from the number in its name.

    TFDS zips the sorted names of the tar with its label list, so a tar with a missing
    image shifts every later label; going by the number in the name cannot shift.
    """
    match = VALIDATION_NAME.fullmatch(os.path.basename(file_name))
    if not match:
        raise ValueError(
            f"validation member {file_name!r} is not named ILSVRC2012_val_NNNNNNNN.JPEG, so "
            "its label cannot be looked up; use the validation tar from image-net.org"
        )
    number = int(match.group(1))
    wnids = validation_wnids()
    if not 1 <= number <= len(wnids):
        raise ValueError(
            f"validation member {file_name!r} has number {number}, outside 1..{len(wnids)}"
        )
    return class_index()[wnids[number - 1]]


def train_label(inner_tar_name: str) -> int:
    """The class id of a train image: its inner tar is named after the class's wnid."""
    wnid = os.path.basename(inner_tar_name)
    if wnid.endswith(".tar"):
        wnid = wnid[: -len(".tar")]
    try:
        return class_index()[wnid]
    except KeyError:
        raise ValueError(
            f"train archive member {inner_tar_name!r} is not <wnid>.tar for one of the "
            "1000 ILSVRC 2012 classes; is this the ILSVRC2012_img_train.tar from image-net.org?"
        ) from None
