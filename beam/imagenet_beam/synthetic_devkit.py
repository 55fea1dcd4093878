"""A small stand-in for `ILSVRC2012_devkit_t12.tar.gz`, numbered like the real one.

Its `data/meta.mat` holds the 1000 leaf classes in a shuffled id order (never the sorted
wnid order TFDS labels by) plus a few ancestors, written with scipy as the struct array
the real one is (`synsets`, one row per synset, 1860x1 there). A few ids are pinned to the
real devkit's: id 1 is n02119789 (kit fox), and the first four validation images get the
real ground truth's 490, 361, 171, 822. The ground truth lists all 50,000 validation
images, each the devkit id of TFDS's label for it, so it agrees with any generated
validation tar (`wrong_ground_truth` makes chosen images disagree).

The same arguments give the same bytes: meta.mat's header carries a fixed date, the tar
fixed headers, the gzip no time.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterable, Mapping

import numpy as np

from imagenet_beam.dataset import DEVKIT_ARCHIVE, TRAIN, class_names, validation_wnids
from imagenet_beam.sources.devkit import (
    GROUND_TRUTH,
    META_MAT,
    NUM_LEAVES,
    SYNSET_FIELDS,
    SYNSETS_VARIABLE,
)
from imagenet_beam.synthetic import GeneratedInput, _rng

DEVKIT_ROOT = "ILSVRC2012_devkit_t12"
# ids the real devkit gives these classes: id 1 (kit fox), and the ground truth's first
# four lines (490, 361, 171, 822) for TFDS's labels of validation images 1..4
REAL_ID_ONE = "n02119789"
REAL_FIRST_GROUND_TRUTH = (490, 361, 171, 822)
NUM_ANCESTORS = 9  # 1001 the root, 1002..1009 below it, the leaves below those
MAT_HEADER_TEXT = b"MATLAB 5.0 MAT-file, Platform: posix, Created on: Fri Jun  1 00:00:00 2012"
MAT_HEADER_TEXT_BYTES = 116
TRAIN_IMAGES_RANGE = (732, 1300)  # the real devkit's fewest and most per class
README = b"Generated stand-in for the ILSVRC 2012 development kit (tests only).\n"


@dataclasses.dataclass(frozen=True)
class GeneratedDevkit:
    """What was written: `wnids[i]` has devkit id i + 1; `ground_truth[n - 1]` is the devkit
    id of ILSVRC2012_val_<n>.JPEG."""

    path: str
    wnids: tuple[str, ...]
    ground_truth: tuple[int, ...]

    def devkit_id(self, wnid: str) -> int:
        return self.wnids.index(wnid) + 1


def devkit_order(seed: int = 0) -> tuple[str, ...]:
    """The wnid of each devkit id 1..1000: shuffled, with the real devkit's pinned ids."""
    pinned = {1: REAL_ID_ONE}
    for number, devkit_id in enumerate(REAL_FIRST_GROUND_TRUTH, start=1):
        wnid = validation_wnids()[number - 1]
        if wnid not in pinned.values() and devkit_id not in pinned:
            pinned[devkit_id] = wnid
    rest = [w for w in class_names() if w not in pinned.values()]
    shuffled = iter(rest[int(i)] for i in _rng(seed, "devkit order").permutation(len(rest)))
    order = tuple(pinned.get(i) or next(shuffled) for i in range(1, NUM_LEAVES + 1))
    assert sorted(order) == list(class_names()) and order != class_names()
    return order


def _train_counts(
    seed: int, generated: GeneratedInput | None, given: Mapping[str, int] | None
) -> dict[str, int]:
    if given is not None:
        return {w: int(given.get(w, 0)) for w in class_names()}
    if generated is not None:
        counts = dict.fromkeys(class_names(), 0)
        for member in generated.split(TRAIN):
            counts[class_names()[member.label]] += 1
        return counts
    low, high = TRAIN_IMAGES_RANGE
    drawn = _rng(seed, "devkit train counts").integers(low, high + 1, NUM_LEAVES)
    return {w: int(n) for w, n in zip(class_names(), drawn, strict=True)}


def _matrix(values: Iterable[float]) -> np.ndarray:
    """A 1xN double row, as MATLAB stores numbers (1x0 when empty)."""
    values = [float(v) for v in values]
    return np.array([values], dtype=np.float64).reshape(1, len(values))


def meta_mat_bytes(wnids: tuple[str, ...], train_counts: Mapping[str, int]) -> bytes:
    """meta.mat: the leaves with ids 1..1000 in `wnids` order, then the ancestors."""
    import scipy.io

    leaves = len(wnids)
    parents = list(range(leaves + 2, leaves + NUM_ANCESTORS + 1))
    groups = np.array_split(np.arange(1, leaves + 1), len(parents))
    rows = [
        (i, wnid, f"synthetic class {wnid}", f"a generated stand-in for the synset {wnid}",
         [], 0, train_counts[wnid])
        for i, wnid in enumerate(wnids, start=1)
    ]
    rows.append((leaves + 1, "n00001740", "entity", "the generated root", parents, 2, 0))
    for parent, group in zip(parents, groups, strict=True):
        rows.append((parent, f"n{90000000 + parent:08d}", f"synthetic group {parent}",
                     "a generated ancestor", [int(c) for c in group], 1, 0))
    synsets = np.zeros((len(rows), 1), dtype=[(f, object) for f in SYNSET_FIELDS])
    for row, (i, wnid, words, gloss, children, height, images) in enumerate(rows):
        synsets[row, 0] = (
            _matrix([i]), wnid, words, gloss, _matrix([len(children)]), _matrix(children),
            _matrix([height]), _matrix([images]),
        )
    buf = io.BytesIO()
    scipy.io.savemat(buf, {SYNSETS_VARIABLE: synsets})
    data = bytearray(buf.getvalue())
    data[:MAT_HEADER_TEXT_BYTES] = MAT_HEADER_TEXT.ljust(MAT_HEADER_TEXT_BYTES, b" ")
    return bytes(data)


def ground_truth_ids(wnids: tuple[str, ...], wrong: Iterable[int] = ()) -> tuple[int, ...]:
    """The devkit id of TFDS's label of each validation image; images numbered in `wrong`
    get the next id instead."""
    id_of = {w: i for i, w in enumerate(wnids, start=1)}
    ids = [id_of[w] for w in validation_wnids()]
    for number in wrong:
        ids[number - 1] = ids[number - 1] % NUM_LEAVES + 1
    return tuple(ids)


def devkit_members(
    *,
    seed: int = 0,
    generated: GeneratedInput | None = None,
    num_train_images: Mapping[str, int] | None = None,
    wrong_ground_truth: Iterable[int] = (),
) -> list[tuple[str, bytes]]:
    """The devkit's files as (tar member name, bytes), in the real one's order of folders."""
    wnids = devkit_order(seed)
    truth = ground_truth_ids(wnids, wrong_ground_truth)
    counts = _train_counts(seed, generated, num_train_images)
    return [
        (f"{DEVKIT_ROOT}/COPYING", README),
        (f"{DEVKIT_ROOT}/readme.txt", README),
        (f"{DEVKIT_ROOT}/{META_MAT}", meta_mat_bytes(wnids, counts)),
        (f"{DEVKIT_ROOT}/{GROUND_TRUTH}", "".join(f"{i}\n" for i in truth).encode("ascii")),
        (f"{DEVKIT_ROOT}/evaluation/demo.val.pred.txt", b"1 2 3 4 5\n"),
    ]


def devkit_bytes(members: Iterable[tuple[str, bytes]]) -> bytes:
    from imagenet_beam.synthetic_layouts import tar_gz_bytes

    return tar_gz_bytes(members, with_dirs=True)


def write_devkit(
    directory: str,
    *,
    seed: int = 0,
    generated: GeneratedInput | None = None,
    num_train_images: Mapping[str, int] | None = None,
    wrong_ground_truth: Iterable[int] = (),
    name: str = DEVKIT_ARCHIVE,
) -> GeneratedDevkit:
    """Writes the devkit into `directory` (a manual dir), under a temporary name first.

    Train counts: `num_train_images` (wnid → count, others 0), else those of `generated`'s
    train split, else drawn in the real devkit's range.
    """
    wrong = list(wrong_ground_truth)
    members = devkit_members(
        seed=seed, generated=generated, num_train_images=num_train_images,
        wrong_ground_truth=wrong,
    )
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    tmp = os.path.join(directory, f".{name}.partial")
    with open(tmp, "wb") as f:
        f.write(devkit_bytes(members))
    os.replace(tmp, path)
    wnids = devkit_order(seed)
    return GeneratedDevkit(path, wnids, ground_truth_ids(wnids, wrong))


def summary_line(kit: GeneratedDevkit) -> str:
    """What `generate --devkit` prints: the devkit's size, checksum and numbering."""
    import hashlib

    with open(kit.path, "rb") as f:
        data = f.read()
    return (
        f"{os.path.basename(kit.path)}: {NUM_LEAVES} classes + {NUM_ANCESTORS} ancestors "
        f"(id 1 = {kit.wnids[0]}), {len(kit.ground_truth):,} validation ids, "
        f"{len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}"
    )
