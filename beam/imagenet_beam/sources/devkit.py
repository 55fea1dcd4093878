"""The ILSVRC 2012 development kit (`ILSVRC2012_devkit_t12.tar.gz`), read in place.

Two members matter: `data/meta.mat` (the `synsets` struct array: ILSVRC2012_ID, WNID,
words, gloss, num_children, children, wordnet_height, num_train_images; ids 1–1000 are the
leaf classes, larger ids their ancestors) and `data/ILSVRC2012_validation_ground_truth.txt`
(one ILSVRC2012_ID per validation image, in file-number order). The devkit numbers the
classes its own way: id 1 is n02119789 (kit fox), while TFDS's label 0 is n01440764
(tench, the first of the sorted wnids). `Devkit` translates between the two.

The archive is streamed once (local or gs://): only those two members are read, each
within a size limit, nothing is extracted to disk, and no name from the archive becomes a
path.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterable, Mapping
from typing import BinaryIO

from imagenet_beam import dataset, storage
from imagenet_beam.errors import DataError

META_MAT = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
MEMBERS = (META_MAT, GROUND_TRUTH)
SYNSETS_VARIABLE = "synsets"
SYNSET_FIELDS = (
    "ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
    "wordnet_height", "num_train_images",
)
NUM_LEAVES = dataset.NUM_CLASSES
NUM_VALIDATION = dataset.FULL_SPLIT_SIZES[dataset.VALIDATION]

# The real devkit: 2.5 MB packed, meta.mat ~0.4 MB, the ground truth ~0.2 MB, 1860 synsets.
MAX_META_MAT_BYTES = 16 << 20
MAX_GROUND_TRUTH_BYTES = 2 << 20
MAX_UNPACKED_BYTES = 256 << 20  # the whole tar as it streams: a gzip bomb stops here
MAX_SYNSETS = 100_000
WNID = re.compile(r"n\d{8}")

WHAT_TO_DO = (
    "give the ILSVRC2012_devkit_t12.tar.gz from image-net.org "
    "(Development kit (Task 1 & 2)), unmodified"
)


class DevkitError(DataError):
    """A file that is not (a readable copy of) the ILSVRC 2012 devkit."""


@dataclasses.dataclass(frozen=True)
class Synset:
    """One entry of meta.mat's `synsets` (a leaf class when `num_children` is 0)."""

    ilsvrc2012_id: int
    wnid: str
    words: str
    gloss: str
    num_children: int
    children: tuple[int, ...]
    wordnet_height: int
    num_train_images: int

    @property
    def is_leaf(self) -> bool:
        return self.num_children == 0


@dataclasses.dataclass(frozen=True)
class Devkit:
    """What the devkit says: every synset (`synsets[i]` has ILSVRC2012_ID i + 1) and the
    devkit id of each validation image (`validation_ground_truth[n - 1]` is that of
    ILSVRC2012_val_<n>.JPEG). Class ids: "devkit id" = ILSVRC2012_ID (1..1000), "label" =
    TFDS's 0-based index in the sorted wnids (`dataset.class_names()`)."""

    path: str
    synsets: tuple[Synset, ...]
    validation_ground_truth: tuple[int, ...]

    @property
    def leaves(self) -> tuple[Synset, ...]:
        """The 1000 classes, in devkit id order (leaves[0] has id 1)."""
        return self.synsets[:NUM_LEAVES]

    def synset(self, devkit_id: int) -> Synset:
        if not 1 <= devkit_id <= len(self.synsets):
            raise KeyError(f"no synset with ILSVRC2012_ID {devkit_id} (1..{len(self.synsets)})")
        return self.synsets[devkit_id - 1]

    def wnid(self, devkit_id: int) -> str:
        """The wnid of a class's devkit id (1..1000)."""
        if not 1 <= devkit_id <= NUM_LEAVES:
            raise KeyError(f"devkit class ids are 1..{NUM_LEAVES}, not {devkit_id}")
        return self.synsets[devkit_id - 1].wnid

    @functools.cached_property
    def _id_of_wnid(self) -> dict[str, int]:
        return {s.wnid: s.ilsvrc2012_id for s in self.leaves}

    def devkit_id(self, wnid: str) -> int:
        """The devkit id (ILSVRC2012_ID, 1..1000) of a class's wnid."""
        return self._id_of_wnid[wnid]

    @functools.cached_property
    def devkit_ids_by_label(self) -> tuple[int, ...]:
        """devkit_ids_by_label[label] is the devkit id of TFDS label `label`."""
        return tuple(self._id_of_wnid[wnid] for wnid in dataset.class_names())

    def tfds_label(self, devkit_id: int) -> int:
        """TFDS's 0-based label of a devkit id."""
        return dataset.class_index()[self.wnid(devkit_id)]

    def devkit_id_of_label(self, label: int) -> int:
        """The devkit id of TFDS's 0-based label."""
        if not 0 <= label < NUM_LEAVES:
            raise KeyError(f"TFDS labels are 0..{NUM_LEAVES - 1}, not {label}")
        return self.devkit_ids_by_label[label]

    def words_by_label(self) -> tuple[str, ...]:
        """The class names (`words`, e.g. "tench, Tinca tinca") in TFDS label order."""
        return tuple(self.synsets[i - 1].words for i in self.devkit_ids_by_label)

    def num_train_images_by_label(self) -> tuple[int, ...]:
        """The devkit's train image count of each class, in TFDS label order."""
        return tuple(self.synsets[i - 1].num_train_images for i in self.devkit_ids_by_label)

    def validation_id(self, number: int) -> int:
        """The devkit id of ILSVRC2012_val_<number>.JPEG (number from 1)."""
        if not 1 <= number <= len(self.validation_ground_truth):
            raise KeyError(
                f"validation image numbers are 1..{len(self.validation_ground_truth)}, "
                f"not {number}"
            )
        return self.validation_ground_truth[number - 1]

    def validation_wnid(self, number: int) -> str:
        return self.wnid(self.validation_id(number))

    def validation_label(self, number: int) -> int:
        """TFDS's label of ILSVRC2012_val_<number>.JPEG, by the devkit's ground truth."""
        return self.tfds_label(self.validation_id(number))

    def check_validation_label(self, file_name: str, label: int) -> None:
        """Raises a DevkitError naming the image when `label` (TFDS's numbering) is not
        what the devkit's ground truth says for that validation image."""
        match = dataset.VALIDATION_NAME.fullmatch(posixpath.basename(file_name))
        if not match:
            raise DevkitError(
                f"validation image {file_name!r} is not named ILSVRC2012_val_NNNNNNNN.JPEG, "
                "so the devkit's ground truth cannot be looked up for it"
            )
        expected = self.validation_label(int(match.group(1)))
        if expected != label:
            names = dataset.class_names()
            raise DevkitError(
                f"validation image {file_name} is labelled {label} ({names[label]}), but the "
                f"devkit's ground truth ({self.path}) says {expected} ({names[expected]}): "
                "the validation tar or the devkit is not image-net.org's; download it again"
            )

    def validation_disagreements(self, wnids: Iterable[str] | None = None) -> list[int]:
        """The validation image numbers whose devkit wnid differs from `wnids` (TFDS's
        validation_labels.txt unless given), in order."""
        wnids = dataset.validation_wnids() if wnids is None else wnids
        return [
            number for number, wnid in enumerate(wnids, start=1)
            if number <= len(self.validation_ground_truth) and self.validation_wnid(number) != wnid
        ]

    def train_count_differences(self, counts: Mapping[int, int]) -> list[tuple[str, int, int]]:
        """(wnid, examples counted, devkit's num_train_images) for each class where they
        differ; `counts` maps TFDS label → examples (a missing label counts 0)."""
        expected = self.num_train_images_by_label()
        names = dataset.class_names()
        return [
            (names[label], counts.get(label, 0), want)
            for label, want in enumerate(expected)
            if counts.get(label, 0) != want
        ]


def devkit_path(manual_dir: str) -> str | None:
    """Where the devkit is in a manual dir, None when it is not there (it is optional)."""
    path = storage.join(manual_dir, dataset.DEVKIT_ARCHIVE)
    return path if storage.exists(path) else None


def read_devkit(path: str) -> Devkit:
    """The devkit at `path` (local or gs://), or a DevkitError saying what is wrong."""
    try:
        with storage.open_read(path) as raw:
            members = _read_members(raw, path)
    except FileNotFoundError:
        raise DevkitError(f"{path} does not exist: {WHAT_TO_DO}") from None
    except OSError as e:
        if isinstance(e, gzip.BadGzipFile):
            raise DevkitError(f"{path} is not a gzipped tar (.tar.gz): {WHAT_TO_DO}") from None
        raise DevkitError(f"cannot read {path} ({e}): {WHAT_TO_DO}") from None
    synsets = parse_meta_mat(members[META_MAT], f"{path}: {META_MAT}")
    truth = parse_ground_truth(members[GROUND_TRUTH], f"{path}: {GROUND_TRUTH}")
    return Devkit(path, synsets, truth)


def _wanted_member(name: str) -> str | None:
    """META_MAT or GROUND_TRUTH for a member at `data/…` or `<one folder>/data/…` (the
    real devkit has `ILSVRC2012_devkit_t12/data/meta.mat`), else None."""
    if name.startswith("/") or ".." in name.split("/"):
        return None
    parts = [p for p in posixpath.normpath(name).split("/") if p not in ("", ".")]
    for wanted in MEMBERS:
        tail = wanted.split("/")
        if parts[-len(tail):] == tail and len(parts) <= len(tail) + 1:
            return wanted
    return None


def _read_members(raw: BinaryIO, path: str) -> dict[str, bytes]:
    limits = {META_MAT: MAX_META_MAT_BYTES, GROUND_TRUTH: MAX_GROUND_TRUTH_BYTES}
    found: dict[str, bytes] = {}
    unpacked = storage.LimitedReader(
        gzip.GzipFile(fileobj=raw, mode="rb"), MAX_UNPACKED_BYTES, lambda: DevkitError(
            f"{path} unpacks to more than {MAX_UNPACKED_BYTES >> 20} MiB; the devkit is a "
            f"few MB: {WHAT_TO_DO}"
        ),
    )
    try:
        with tarfile.open(fileobj=io.BufferedReader(unpacked), mode="r|") as tar:
            for info in tar:
                tar.members.clear()
                wanted = _wanted_member(info.name)
                if wanted is None:
                    continue
                if not info.isreg():
                    raise DevkitError(
                        f"{path}: {info.name} is not a regular file: {WHAT_TO_DO}"
                    )
                if wanted in found:
                    raise DevkitError(f"{path} holds {wanted} twice: {WHAT_TO_DO}")
                if info.size > limits[wanted]:
                    raise DevkitError(
                        f"{path}: {info.name} is {info.size:,} bytes, more than the "
                        f"{limits[wanted]:,} a devkit's has: {WHAT_TO_DO}"
                    )
                member = tar.extractfile(info)
                data = member.read() if member is not None else b""
                if len(data) != info.size:
                    raise DevkitError(f"{path} ends inside {info.name}: {WHAT_TO_DO}")
                found[wanted] = data
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DevkitError(f"{path} is not a complete tar.gz ({e}): {WHAT_TO_DO}") from None
    missing = [m for m in MEMBERS if m not in found]
    if missing:
        raise DevkitError(
            f"{path} is not the ILSVRC 2012 devkit: it has no {' and no '.join(missing)}; "
            f"{WHAT_TO_DO}"
        )
    return found


def _scalar_int(value, field: str, where: str) -> int:
    import numpy as np

    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "iuf":
        raise DevkitError(f"{where}: {field} is not a number ({array.dtype}, {array.size} values)")
    number = array.reshape(()).item()
    if number != int(number):
        raise DevkitError(f"{where}: {field} is {number}, not a whole number")
    return int(number)


def _text(value, field: str, where: str) -> str:
    import numpy as np

    array = np.asarray(value)
    if array.dtype.kind not in "US" or array.size > 1:
        if array.size == 0:
            return ""
        raise DevkitError(f"{where}: {field} is not text")
    text = array.reshape(()).item() if array.size else ""
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def _id_list(value, where: str) -> tuple[int, ...]:
    import numpy as np

    array = np.atleast_1d(np.asarray(value))  # one child squeezes to a scalar
    if array.size == 0:
        return ()
    if array.dtype.kind not in "iuf":
        raise DevkitError(f"{where}: children is not a list of ids")
    return tuple(_scalar_int(v, "children", where) for v in array.ravel())


def parse_meta_mat(data: bytes, where: str) -> tuple[Synset, ...]:
    """The synsets of a meta.mat, in id order, checked: ids 1..N, one each; ids 1–1000 the
    leaves, whose wnids are exactly TFDS's 1000 classes; children ids in range."""
    import numpy as np
    import scipy.io

    bad = f"{where} is not the devkit's meta.mat"
    try:
        listed = scipy.io.whosmat(io.BytesIO(data))
        variables = {name: (shape, kind) for name, shape, kind in listed}
    except Exception as e:  # scipy raises many kinds for a file that is not a .mat
        raise DevkitError(f"{bad} ({type(e).__name__}: {e}): {WHAT_TO_DO}") from None
    shape, kind = variables.get(SYNSETS_VARIABLE, (None, None))
    if kind != "struct":
        raise DevkitError(f"{bad}: it has no `synsets` struct array: {WHAT_TO_DO}")
    count = int(np.prod(shape))
    if not NUM_LEAVES <= count <= MAX_SYNSETS:
        raise DevkitError(
            f"{bad}: `synsets` has {count} entries, the devkit's has 1000 classes and their "
            f"ancestors (1860): {WHAT_TO_DO}"
        )
    try:
        mat = scipy.io.loadmat(
            io.BytesIO(data), squeeze_me=True, variable_names=[SYNSETS_VARIABLE]
        )
    except Exception as e:
        raise DevkitError(f"{bad} ({type(e).__name__}: {e}): {WHAT_TO_DO}") from None
    records = np.atleast_1d(mat[SYNSETS_VARIABLE]).ravel()
    names = records.dtype.names or ()
    absent = [f for f in SYNSET_FIELDS if f not in names]
    if absent:
        raise DevkitError(f"{bad}: `synsets` lacks the fields {', '.join(absent)}: {WHAT_TO_DO}")
    synsets = []
    for position, record in enumerate(records):
        at = f"{where}, synset {position + 1}"
        synsets.append(Synset(
            ilsvrc2012_id=_scalar_int(record["ILSVRC2012_ID"], "ILSVRC2012_ID", at),
            wnid=_text(record["WNID"], "WNID", at),
            words=_text(record["words"], "words", at),
            gloss=_text(record["gloss"], "gloss", at),
            num_children=_scalar_int(record["num_children"], "num_children", at),
            children=_id_list(record["children"], at),
            wordnet_height=_scalar_int(record["wordnet_height"], "wordnet_height", at),
            num_train_images=_scalar_int(record["num_train_images"], "num_train_images", at),
        ))
    synsets.sort(key=lambda s: s.ilsvrc2012_id)
    ids = [s.ilsvrc2012_id for s in synsets]
    if ids != list(range(1, len(ids) + 1)):
        wrong = next(i for i, got in enumerate(ids, start=1) if got != i)
        raise DevkitError(
            f"{bad}: its ILSVRC2012_IDs are not 1..{len(ids)}, one each (first gap or "
            f"repeat at {wrong}): {WHAT_TO_DO}"
        )
    leaves = synsets[:NUM_LEAVES]
    not_leaves = [s.ilsvrc2012_id for s in leaves if not s.is_leaf or s.children]
    if not_leaves:
        raise DevkitError(
            f"{bad}: ids 1..{NUM_LEAVES} must be the leaf classes, but id {not_leaves[0]} "
            f"has children: {WHAT_TO_DO}"
        )
    wnids = [s.wnid for s in leaves]
    classes = set(dataset.class_names())
    strangers = [w for w in wnids if w not in classes]
    if strangers or len(set(wnids)) != NUM_LEAVES:
        what = (f"{strangers[0]!r} (id {wnids.index(strangers[0]) + 1}) is not one of the "
                "1000 ILSVRC 2012 classes") if strangers else "a class appears twice"
        raise DevkitError(f"{bad}: {what}: {WHAT_TO_DO}")
    for s in synsets:
        if len(s.children) != s.num_children or any(
            not 1 <= c <= len(synsets) for c in s.children
        ):
            raise DevkitError(
                f"{bad}: synset {s.ilsvrc2012_id} ({s.wnid}) has num_children "
                f"{s.num_children} but children {list(s.children)[:5]}: {WHAT_TO_DO}"
            )
    return tuple(synsets)


def parse_ground_truth(data: bytes, where: str) -> tuple[int, ...]:
    """The 50,000 devkit ids of the validation images, one a line, each in 1..1000."""
    try:
        lines = [line.strip() for line in data.decode("ascii").splitlines()]
    except UnicodeDecodeError:
        raise DevkitError(f"{where} is not text: {WHAT_TO_DO}") from None
    while lines and not lines[-1]:
        lines.pop()
    ids = []
    for number, line in enumerate(lines, start=1):
        if not line.isdigit() or not 1 <= int(line) <= NUM_LEAVES:
            raise DevkitError(
                f"{where}: line {number} is {line[:20]!r}, not a class id in 1..{NUM_LEAVES}: "
                f"{WHAT_TO_DO}"
            )
        ids.append(int(line))
    if len(ids) != NUM_VALIDATION:
        raise DevkitError(
            f"{where} has {len(ids):,} lines, one per validation image makes "
            f"{NUM_VALIDATION:,}: {WHAT_TO_DO}"
        )
    return tuple(ids)
