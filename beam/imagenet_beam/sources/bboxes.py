"""The ILSVRC 2012 bounding boxes (optional): `ILSVRC2012_bbox_train_v2.tar.gz` and
`ILSVRC2012_bbox_val_v3.tgz`, Pascal VOC XML, one file per annotated image.

Where they are: train `<wnid>/<wnid>_<n>.xml` (544,546 files, 615,299 boxes; the layout
tensorflow/models' inception scripts unpack and read), validation
`val/ILSVRC2012_val_<n>.xml`. Copies that hold one archive per class instead
(`<wnid>.tar.gz` of XML files, as image-net.org's full-ImageNet annotations come) are read
too. Only the file's own name counts, not the folders above it.

What a box is, as tensorflow/models' `process_bounding_boxes.py` makes them for the classic
TF format: `xmin, ymin, xmax, ymax` divided by the `<size>` in the XML (the size shown to
the annotator, which that script notes may differ from the stored image's), each pair put in
order, then clamped to [0, 1] (some annotations reach outside the image); plus the box's
`<object><name>` as given (usually the image's wnid; not every one is a wnid). The image's
name comes from the XML file's name, not from `<filename>` (sometimes `%s` in the real data).
Unlike that script, a box that clamps to zero area is kept, not dropped.

How they are read: each archive streams once (local or gs://), nothing is extracted, no name
from the archive becomes a path, each XML is size-limited and parsed with defusedxml with
DTDs refused (ILSVRC's annotations have none; a DTD is how entity bombs and external entities
come), so a hostile file costs microseconds. A file that does not parse is a BoxError naming
archive and member: an image-net.org archive has none, so the copy is damaged or not theirs.
XML files for no ILSVRC 2012 image are listed (`Orphan`), not fatal.

What they become: `prepare_boxes` writes one small JSON file per group (a train wnid; all
of validation) into a work dir, so indexing one train class loads only its boxes
(`load_boxes`), and is skipped when the archives are unchanged since (path, size, times).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import math
import os
import posixpath
import re
import tarfile
import zlib
from collections.abc import Collection, Iterator, Mapping
from typing import BinaryIO, NamedTuple

from imagenet_beam import dataset, storage
from imagenet_beam.errors import DataError
from imagenet_beam.sources.archive_checks import CheckedTarInfo, tar_end_problem

log = logging.getLogger(__name__)

SPLITS = (dataset.TRAIN, dataset.VALIDATION)
VALIDATION_GROUP = "validation"
XML_SUFFIX = ".xml"
NESTED_SUFFIXES = (".tar.gz", ".tgz", ".tar")
TRAIN_XML = re.compile(r"(n\d{8})_(\d+)\.xml")
VALIDATION_XML = re.compile(r"ILSVRC2012_val_(\d{8})\.xml")
GROUP_NAME = re.compile(r"n\d{8}|" + VALIDATION_GROUP)

# An annotation is ~0.5–2 KB; the train archive is 20 MB packed, under 1 GB unpacked.
MAX_XML_BYTES = 1 << 20
MAX_NESTED_ARCHIVE_BYTES = 64 << 20
MAX_UNPACKED_BYTES = 4 << 30  # one archive as it streams: a gzip bomb stops here

SUMMARY_FILE = "bboxes.json"
GROUP_FILE_PREFIX = "bboxes-"
GROUP_FILE_SUFFIX = ".json"
_FORMAT = 1
_TAR_BUFSIZE = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_CORNERS = ("xmin", "ymin", "xmax", "ymax")
_PROGRESS_EVERY = 100_000
_SPOOL_BATCH = 20_000  # annotations held before they go to scratch disk

WHAT_TO_DO = (
    "give image-net.org's ILSVRC2012_bbox_train_v2.tar.gz / ILSVRC2012_bbox_val_v3.tgz "
    "unmodified (download it again), or remove it from the manual dir to convert without boxes"
)

# Why an XML file's boxes are not used (Orphan.reason).
NOT_AN_IMAGE_NAME = "not named like an ILSVRC 2012 {split} image"
UNSAFE_PATH = "its path in the archive is absolute or climbs out with '..'"
NOT_REGULAR = "not a regular file"
DUPLICATE = "a second annotation of the same image (the first is used)"
NO_SUCH_IMAGE = "no such image in the split"


class BoxError(DataError):
    """A bounding-box archive that cannot be read as image-net.org's."""


class Box(NamedTuple):
    """One box, relative to the annotated image size, clamped to [0, 1], min <= max."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    wnid: str  # the XML's <object><name>


@dataclasses.dataclass(frozen=True)
class Orphan:
    """An XML file whose boxes go to no image: named for none, or for one the split lacks."""

    split: str
    archive: str  # the archive's file name
    member: str  # the XML file's name in the archive
    file_name: str | None  # the image it names, when it names one
    reason: str


@dataclasses.dataclass(frozen=True)
class SplitBoxes:
    """What one archive held: XML files for images of the split (`xml_files`, orphans by
    name excluded), their boxes, the images with at least one box, and the boxes clamping
    changed."""

    archive: str  # its path
    xml_files: int
    boxes: int
    images_with_boxes: int
    clamped_boxes: int


@dataclasses.dataclass(frozen=True)
class BoxSummary:
    """What `prepare_boxes` wrote into `out_dir`: per split counts, the images annotated per
    group, and the XML files not used. The counts are what lineage records."""

    out_dir: str
    splits: Mapping[str, SplitBoxes]
    groups: Mapping[str, int]  # group (train wnid, or "validation") → annotated images
    ignored: tuple[Orphan, ...]
    cached: bool = False

    def groups_of(self, split: str) -> list[str]:
        return sorted(g for g in self.groups if split_of_group(g) == split)

    def to_dict(self) -> dict:
        return {
            "splits": {s: dataclasses.asdict(b) for s, b in self.splits.items()},
            "groups": dict(self.groups),
            "ignored": [dataclasses.asdict(o) for o in self.ignored],
        }

    @classmethod
    def from_dict(cls, out_dir: str, data: dict, *, cached: bool) -> BoxSummary:
        return cls(
            out_dir=out_dir,
            splits={s: SplitBoxes(**b) for s, b in data["splits"].items()},
            groups=dict(data["groups"]),
            ignored=tuple(Orphan(**o) for o in data["ignored"]),
            cached=cached,
        )


def archive_paths(manual_dir: str) -> dict[str, str]:
    """The box archives present in a manual dir, by split (both are optional)."""
    paths = {split: storage.join(manual_dir, name) for split, name in dataset.BBOX_ARCHIVES.items()}
    return {split: path for split, path in paths.items() if storage.exists(path)}


def split_of_group(group: str) -> str:
    return dataset.VALIDATION if group == VALIDATION_GROUP else dataset.TRAIN


def group_of(split: str, file_name: str) -> str:
    """The group whose file holds an image's boxes: its wnid for train (the name's prefix,
    which is also its class tar's name), "validation" for validation."""
    if split == dataset.VALIDATION:
        return VALIDATION_GROUP
    return posixpath.basename(file_name).split("_", 1)[0]


# --- one XML file -------------------------------------------------------------------------


def _number(element, path: str, where: str) -> float:
    node = element.find(path)
    text = (node.text or "").strip() if node is not None else ""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        shown = f"{text!r}" if node is not None else "missing"
        raise BoxError(f"{where}: <{path}> is {shown}, not a number: {WHAT_TO_DO}")
    return value


def _span(a: float, b: float, extent: float) -> tuple[float, float, bool]:
    """(low, high) of a coordinate pair relative to `extent`, clamped; and whether clamped."""
    low, high = sorted((a / extent, b / extent))
    clamped_low, clamped_high = min(max(low, 0.0), 1.0), min(max(high, 0.0), 1.0)
    return clamped_low, clamped_high, (clamped_low, clamped_high) != (low, high)


def parse_annotation(data: bytes, where: str) -> tuple[tuple[Box, ...], int]:
    """The boxes of one Pascal VOC annotation, in its order, and how many clamping changed.

    Refuses any DTD unread (entity bombs, external entities) and anything that is not an
    `<annotation>` with a positive `<size>` and numeric `<bndbox>` corners.
    """
    import defusedxml
    import defusedxml.ElementTree as safe_xml

    try:
        root = safe_xml.fromstring(data, forbid_dtd=True)
    except defusedxml.DefusedXmlException as e:
        raise BoxError(
            f"{where} declares a DTD or entities ({type(e).__name__}), which no ILSVRC "
            f"annotation does; refused unread (it could be an XML bomb or read other files): "
            f"{WHAT_TO_DO}"
        ) from None
    except safe_xml.ParseError as e:
        raise BoxError(f"{where} is not well-formed XML ({e}): {WHAT_TO_DO}") from None
    if root.tag != "annotation":
        raise BoxError(f"{where}: the root element is <{root.tag}>, not <annotation>: {WHAT_TO_DO}")
    width, height = _number(root, "size/width", where), _number(root, "size/height", where)
    if width <= 0 or height <= 0:
        raise BoxError(f"{where}: the image size is {width:g}x{height:g}: {WHAT_TO_DO}")
    boxes, clamped = [], 0
    for i, obj in enumerate(root.findall("object"), start=1):
        at = f"{where}, object {i}"
        name, box = obj.find("name"), obj.find("bndbox")
        if box is None:
            raise BoxError(f"{at} has no <bndbox>: {WHAT_TO_DO}")
        corners = [_number(box, corner, f"{at}: <bndbox>") for corner in _CORNERS]
        xmin, xmax, x_clamped = _span(corners[0], corners[2], width)
        ymin, ymax, y_clamped = _span(corners[1], corners[3], height)
        wnid = (name.text or "").strip() if name is not None else ""
        boxes.append(Box(xmin, ymin, xmax, ymax, wnid))
        clamped += x_clamped or y_clamped
    return tuple(boxes), clamped


# --- the archives -------------------------------------------------------------------------


def _unpacked(raw: BinaryIO, where: str) -> io.BufferedReader:
    """The tar inside `raw`, gunzipped when it is gzipped, as a size-limited stream."""
    head = raw.read(len(_GZIP_MAGIC))
    stream: BinaryIO = _Prefixed(head, raw)
    if head == _GZIP_MAGIC:
        stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
    return io.BufferedReader(storage.LimitedReader(stream, MAX_UNPACKED_BYTES, lambda: BoxError(
        f"{where} unpacks to more than {MAX_UNPACKED_BYTES >> 30} GiB; the real one is under "
        f"1 GB: {WHAT_TO_DO}"
    )), _TAR_BUFSIZE)


class _Prefixed(io.RawIOBase):
    """`head` then the rest of `raw`: peeking at a stream that may not seek (gs://)."""

    def __init__(self, head: bytes, raw: BinaryIO):
        super().__init__()
        self._head, self._raw = head, raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            data, self._head = self._head[: len(buffer)], self._head[len(buffer) :]
        else:
            data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _is_safe(name: str) -> bool:
    return not (name.startswith("/") or "\\" in name or "\0" in name or ".." in name.split("/"))


class _Member(NamedTuple):
    name: str  # as shown in messages: nested archive members as "<class archive>/<member>"
    data: bytes | None  # None: not read, see `problem`
    problem: str | None


def _members(stream: BinaryIO, where: str, *, nested: bool) -> Iterator[_Member]:
    """Every member ending in .xml (and, with `nested`, inside per-class archives)."""
    with tarfile.open(fileobj=stream, mode="r|", tarinfo=CheckedTarInfo) as tar:
        for info in tar:
            tar.members.clear()  # headers only: memory stays flat over 544k members
            name = info.name
            lower = name.lower()
            is_xml = lower.endswith(XML_SUFFIX)
            is_nested = nested and lower.endswith(NESTED_SUFFIXES) and info.isreg()
            if not (is_xml or is_nested):
                continue
            if not _is_safe(name):
                yield _Member(name, None, UNSAFE_PATH)
                continue
            if is_xml and not info.isreg():
                yield _Member(name, None, NOT_REGULAR)
                continue
            limit = MAX_XML_BYTES if is_xml else MAX_NESTED_ARCHIVE_BYTES
            if info.size > limit:
                raise BoxError(
                    f"{where}: {name} is {info.size:,} bytes, more than the {limit:,} "
                    f"{'an annotation' if is_xml else 'a class archive of annotations'} can "
                    f"take: {WHAT_TO_DO}"
                )
            reader = tar.extractfile(info)
            data = reader.read() if reader is not None else b""
            if len(data) != info.size:
                raise BoxError(f"{where} ends inside {name}: {WHAT_TO_DO}")
            if is_xml:
                yield _Member(name, data, None)
                continue
            inner_where = f"{where}: {name}"
            for inner in _members(_unpacked(io.BytesIO(data), inner_where), inner_where,
                                  nested=False):
                yield inner._replace(name=f"{name}/{inner.name}")
        problem = tar_end_problem(tar)
    if problem:
        raise BoxError(f"{where} is not a complete tar archive ({problem}): {WHAT_TO_DO}")


def _read_archive(path: str, split: str) -> Iterator[_Member]:
    try:
        with storage.open_read(path) as raw:
            yield from _members(_unpacked(raw, path), path, nested=split == dataset.TRAIN)
    except FileNotFoundError:
        raise BoxError(f"{path} does not exist: {WHAT_TO_DO}") from None
    except gzip.BadGzipFile as e:
        raise BoxError(f"{path} is not a readable .tar.gz ({e}): {WHAT_TO_DO}") from None
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise BoxError(
            f"{path} is not a complete tar.gz ({type(e).__name__}: {e}): the download is "
            f"probably incomplete or corrupt; {WHAT_TO_DO}"
        ) from None
    except OSError as e:
        raise BoxError(f"cannot read {path} ({e}): {WHAT_TO_DO}") from None


def _image_name(split: str, member: str) -> str | None:
    """The image an XML file annotates, from its own name; None when it names none."""
    base = posixpath.basename(member)
    if split == dataset.TRAIN:
        match = TRAIN_XML.fullmatch(base)
        if not match or match.group(1) not in dataset.class_index():
            return None
    else:
        match = VALIDATION_XML.fullmatch(base)
        limit = dataset.FULL_SPLIT_SIZES[dataset.VALIDATION]
        if not match or not 1 <= int(match.group(1)) <= limit:
            return None
    return base[: -len(XML_SUFFIX)] + ".JPEG"


# --- the work dir -------------------------------------------------------------------------


def _group_path(out_dir: str, group: str) -> str:
    if not GROUP_NAME.fullmatch(group):
        raise ValueError(f"{group!r} is not a box group (a wnid, or {VALIDATION_GROUP!r})")
    return storage.join(out_dir, f"{GROUP_FILE_PREFIX}{group}{GROUP_FILE_SUFFIX}")


def _box_row(box: Box) -> list:
    return [box.xmin, box.ymin, box.xmax, box.ymax, box.wnid]


class _Group:
    """One group's images: boxes and XML member by file name, first annotation wins."""

    def __init__(self) -> None:
        self.images: dict[str, list] = {}
        self.members: dict[str, str] = {}

    def add(self, file_name: str, member: str, rows: list) -> bool:
        if file_name in self.images:
            return False
        self.images[file_name] = rows
        self.members[file_name] = member
        return True

    def to_json(self, group: str) -> bytes:
        return json.dumps(
            {"format": _FORMAT, "group": group, "images": self.images, "members": self.members},
            separators=(",", ":"),
        ).encode("utf-8")


class _Spool:
    """Annotations on local scratch disk, one file per group, in archive order: memory
    holds one batch, whatever order the archive keeps its classes in."""

    def __init__(self, directory: str):
        self._directory = directory
        self._pending: dict[str, list[str]] = {}
        self._count = 0

    def _path(self, group: str) -> str:
        return posixpath.join(self._directory, group + ".jsonl")

    def add(self, group: str, file_name: str, member: str, boxes: tuple[Box, ...],
            clamped: int) -> None:
        line = json.dumps([file_name, member, [_box_row(b) for b in boxes], clamped])
        self._pending.setdefault(group, []).append(line)
        self._count += 1
        if self._count >= _SPOOL_BATCH:
            self.flush()

    def flush(self) -> None:
        for group, lines in self._pending.items():
            with open(self._path(group), "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        self._pending, self._count = {}, 0

    def groups(self) -> Iterator[tuple[str, Iterator[list]]]:
        self.flush()
        for name in sorted(os.listdir(self._directory)):
            group = name[: -len(".jsonl")]
            with open(self._path(group), encoding="utf-8") as f:
                yield group, (json.loads(line) for line in f)


def _prepare_split(path: str, split: str, out_dir: str) -> tuple[SplitBoxes, dict, list]:
    """Streams one archive and writes its groups: (counts, images per group, orphans)."""
    archive = storage.basename(path)
    ignored: list[Orphan] = []
    with storage.scratch_dir() as scratch:
        spool = _Spool(scratch)
        read = 0
        for member in _read_archive(path, split):
            file_name = None if member.problem else _image_name(split, member.name)
            if file_name is None:
                reason = member.problem or NOT_AN_IMAGE_NAME.format(split=split)
                ignored.append(Orphan(split, archive, member.name, None, reason))
                continue
            assert member.data is not None
            found, clamped = parse_annotation(member.data, f"{path}: {member.name}")
            spool.add(group_of(split, file_name), file_name, member.name, found, clamped)
            read += 1
            if read % _PROGRESS_EVERY == 0:
                log.info("%s: %d annotations read", path, read)
        if not read:
            names = "nXXXXXXXX_N.xml" if split == dataset.TRAIN else "ILSVRC2012_val_NNNNNNNN.xml"
            also = f" (it has {len(ignored)} other XML files)" if ignored else ""
            raise BoxError(
                f"{path} holds no annotation of a {split} image ({names}){also}: is it the "
                f"{dataset.BBOX_ARCHIVES[split]}? {WHAT_TO_DO}"
            )
        xml_files = boxes = images_with_boxes = clamped_boxes = 0
        images_per_group = {}
        for name, annotations in spool.groups():
            group = _Group()
            for file_name, member, rows, clamped in annotations:
                if not group.add(file_name, member, rows):
                    ignored.append(Orphan(split, archive, member, file_name, DUPLICATE))
                    continue
                xml_files += 1
                boxes += len(rows)
                images_with_boxes += bool(rows)
                clamped_boxes += clamped
            storage.write_bytes(_group_path(out_dir, name), group.to_json(name))
            images_per_group[name] = len(group.images)
    counts = SplitBoxes(path, xml_files, boxes, images_with_boxes, clamped_boxes)
    return counts, images_per_group, ignored


def _inputs(archives: Mapping[str, str | None]) -> dict:
    """What identifies the archives: path and file identity of each one given."""
    inputs = {}
    for split, path in archives.items():
        if path is None:
            continue
        try:
            inputs[split] = {"path": path, "identity": storage.identity(path)}
        except FileNotFoundError:
            raise BoxError(f"{path} does not exist: {WHAT_TO_DO}") from None
    return inputs


def _cached(out_dir: str, inputs: dict) -> BoxSummary | None:
    summary_path = storage.join(out_dir, SUMMARY_FILE)
    if not storage.exists(summary_path):
        return None
    try:
        stored = json.loads(storage.read_bytes(summary_path))
        if stored.get("format") != _FORMAT or stored.get("inputs") != inputs:
            return None
        return BoxSummary.from_dict(out_dir, stored["summary"], cached=True)
    except (ValueError, KeyError, TypeError):
        return None  # torn or from another version: prepared again


def _clear(out_dir: str) -> None:
    """Removes the summary first (it marks the groups complete), then our group files."""
    files, _ = storage.list_dir(out_dir)
    names = {f.name for f in files}
    if SUMMARY_FILE in names:
        storage.delete_files([storage.join(out_dir, SUMMARY_FILE)])
    storage.delete_files([
        storage.join(out_dir, name) for name in sorted(names)
        if name.startswith(GROUP_FILE_PREFIX) and name.endswith(GROUP_FILE_SUFFIX)
    ])


def prepare_boxes(train_archive: str | None, val_archive: str | None, out_dir: str) -> BoxSummary:
    """Reads the box archives given (local or gs://) and writes their groups into `out_dir`.

    Nothing is read again when `out_dir` holds the result for the same archives (path,
    size, times; on GCS generation). Otherwise the previous result goes first, and the
    summary is written last, so a killed run leaves nothing that looks complete.
    Raises BoxError for an archive that is missing, damaged or holds a malformed or hostile
    XML file.
    """
    inputs = _inputs({dataset.TRAIN: train_archive, dataset.VALIDATION: val_archive})
    cached = _cached(out_dir, inputs)
    if cached is not None:
        log.info("bounding boxes: prepared before in %s for the same archives", out_dir)
        return cached
    storage.makedirs(out_dir)
    _clear(out_dir)
    splits, groups, ignored = {}, {}, []
    for split, source in inputs.items():
        log.info("%s: reading the %s bounding boxes", source["path"], split)
        splits[split], found, orphans = _prepare_split(source["path"], split, out_dir)
        groups.update(found)
        ignored += orphans
    summary = BoxSummary(out_dir, splits, groups, tuple(ignored))
    record = {"format": _FORMAT, "inputs": inputs, "summary": summary.to_dict()}
    storage.write_bytes(storage.join(out_dir, SUMMARY_FILE),
                        json.dumps(record, indent=1, sort_keys=True).encode("utf-8"))
    for split, counts in splits.items():
        log.info("%s: %d boxes on %d images from %d XML files (%d clamped), %d XML files "
                 "not used", split, counts.boxes, counts.images_with_boxes, counts.xml_files,
                 counts.clamped_boxes, sum(o.split == split for o in ignored))
    return summary


def _read_group(out_dir: str, group: str) -> dict | None:
    path = _group_path(out_dir, group)
    if not storage.exists(path):
        if not storage.exists(storage.join(out_dir, SUMMARY_FILE)):
            raise BoxError(f"{out_dir} holds no prepared bounding boxes: run prepare_boxes first")
        return None
    try:
        stored = json.loads(storage.read_bytes(path))
        if stored.get("format") != _FORMAT or stored.get("group") != group:
            raise ValueError("another format or group")
        return stored
    except (ValueError, KeyError, TypeError) as e:
        raise BoxError(f"{path} is damaged ({e}): delete {out_dir} and run again") from None


def prepare_split(manual_dir: str, data_dir: str, split: str) -> BoxSummary | None:
    """The split's boxes from its box archive in manual_dir, prepared (or found prepared)
    in its own folder of data_dir's work dir; None when manual_dir has no such archive."""
    archive = archive_paths(manual_dir).get(split)
    if archive is None:
        return None
    from imagenet_beam.layout import OutputLayout

    return prepare_boxes(
        archive if split == dataset.TRAIN else None,
        archive if split == dataset.VALIDATION else None,
        OutputLayout(data_dir).boxes_dir(split),
    )


def load_boxes(out_dir: str, group: str) -> dict[str, tuple[Box, ...]]:
    """Image file name → its boxes (in XML order), for one group (`group_of`); images of
    the group without an XML file are absent, those whose XML has no object map to ()."""
    stored = _read_group(out_dir, group)
    if stored is None:
        return {}
    return {
        name: tuple(Box(*row) for row in rows) for name, rows in stored["images"].items()
    }


def orphans(summary: BoxSummary, split: str, existing_file_names: Collection[str]) -> list[Orphan]:
    """The split's XML files whose boxes go to no image: those named for no ILSVRC 2012
    image (or unsafe, duplicate), then, per group, those for an image not in
    `existing_file_names` (the split's file names, e.g. 'n01440764_10026.JPEG')."""
    existing = existing_file_names if isinstance(existing_file_names, (set, frozenset)) else set(
        existing_file_names)
    found = [o for o in summary.ignored if o.split == split]
    archive = storage.basename(summary.splits[split].archive) if split in summary.splits else ""
    for group in summary.groups_of(split):
        stored = _read_group(summary.out_dir, group) or {"members": {}}
        found += [
            Orphan(split, archive, member, name, NO_SUCH_IMAGE)
            for name, member in stored["members"].items() if name not in existing
        ]
    return found
