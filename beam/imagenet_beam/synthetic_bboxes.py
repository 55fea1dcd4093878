"""Small stand-ins for `ILSVRC2012_bbox_train_v2.tar.gz` and `ILSVRC2012_bbox_val_v3.tgz`,
for the images of a generated manual dir.

Laid out like the real ones (train `<wnid>/<wnid>_<n>.xml` with folder entries, validation
`val/ILSVRC2012_val_<n>.xml`), Pascal VOC XML as image-net.org writes it. Boxes go to a
subset of the train images and to all validation images but one; some images have several
objects, some boxes reach outside the image or have their corners swapped (so clamping and
ordering show), some corners are fractional (as in a few real files), one `<filename>` is
`%s` (as in the real data: the name comes from the XML file's own name), and each split has
one XML file for an image the generated set lacks. `class_archives` instead packs train as
one `<wnid>.tar.gz` per class. `GeneratedBoxes` says what a reader must find.

The same arguments give the same bytes (fixed tar and gzip headers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence

from imagenet_beam.dataset import BBOX_ARCHIVES, TRAIN, VALIDATION, class_names, validation_wnids
from imagenet_beam.sources.bboxes import Box
from imagenet_beam.synthetic import GeneratedInput, GeneratedMember, _rng
from imagenet_beam.synthetic_layouts import _image_size, tar_gz_bytes

TRAIN_FRACTION = 0.6  # of the train images that get an XML file
MAX_OBJECTS = 3
CORNER_KINDS = ("inside", "inside", "inside", "beyond", "swapped", "fractional")
BEYOND = 7  # pixels past the image's edge
ORPHAN_TRAIN_NUMBER = 99_999_999  # never a generated image number
NOISY_FILENAME = "%s"
VALIDATION_FOLDER = "val"


@dataclasses.dataclass(frozen=True)
class GeneratedBoxes:
    """What was written: the archive paths, and per split the boxes a reader must find for
    each XML-named image (orphans included) and the file names that are orphans."""

    paths: dict[str, str]
    expected: dict[str, dict[str, tuple[Box, ...]]]
    orphans: dict[str, tuple[str, ...]]
    clamped: dict[str, int]  # boxes that reach outside their image

    def num_boxes(self, split: str) -> int:
        return sum(len(b) for b in self.expected[split].values())


def _stem(file_name: str) -> str:
    return file_name.rsplit(".", 1)[0]


def _relative(a: float, b: float, extent: int) -> tuple[float, float]:
    low, high = sorted((a / extent, b / extent))
    return min(max(low, 0.0), 1.0), min(max(high, 0.0), 1.0)


def _outside(corners: tuple[float, float, float, float], size: tuple[int, int]) -> bool:
    x0, y0, x1, y1 = corners
    width, height = size
    return min(x0, x1, y0, y1) < 0 or max(x0, x1) > width or max(y0, y1) > height


def _corners(rng, kind: str, width: int, height: int) -> tuple[float, float, float, float]:
    """Pixel corners (xmin, ymin, xmax, ymax) as the XML will state them."""
    xmin = int(rng.integers(0, max(1, width // 2)))
    ymin = int(rng.integers(0, max(1, height // 2)))
    xmax = int(rng.integers(xmin + 1, max(xmin + 2, width + 1)))
    ymax = int(rng.integers(ymin + 1, max(ymin + 2, height + 1)))
    if kind == "beyond":
        return -BEYOND, ymin, xmax, height + BEYOND
    if kind == "swapped":
        return xmax, ymax, xmin, ymin
    if kind == "fractional":
        return xmin + 0.5, ymin + 0.25, xmax - 0.5, ymax
    return xmin, ymin, xmax, ymax


def _number_text(value: float | str) -> str:
    """Whole numbers as image-net.org writes them, fractions in full; text as given (tests
    write malformed corners)."""
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def annotation_xml(
    stem: str, folder: str, wnid: str, size: tuple[int, int],
    corners: Sequence[Sequence[float | str]], *, filename: str | None = None,
) -> bytes:
    """One annotation, laid out as image-net.org's are."""
    width, height = size
    objects = "".join(
        f"\t<object>\n\t\t<name>{wnid}</name>\n\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n\t\t<bndbox>\n"
        + "".join(f"\t\t\t<{tag}>{_number_text(v)}</{tag}>\n"
                  for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), c, strict=True))
        + "\t\t</bndbox>\n\t</object>\n"
        for c in corners
    )
    return (
        f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{filename or stem}</filename>\n"
        f"\t<source>\n\t\t<database>ILSVRC_2012</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
        f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{objects}</annotation>\n"
    ).encode()


def _annotate(seed: int, split: str, file_name: str, wnid: str, size: tuple[int, int]):
    """(pixel corners, expected boxes) of one image, drawn from its name."""
    rng = _rng(seed, "bboxes", split, file_name)
    corners = [
        _corners(rng, str(rng.choice(CORNER_KINDS)), *size)
        for _ in range(int(rng.integers(1, MAX_OBJECTS + 1)))
    ]
    width, height = size
    expected = []
    for x0, y0, x1, y1 in corners:
        xmin, xmax = _relative(x0, x1, width)
        ymin, ymax = _relative(y0, y1, height)
        expected.append(Box(xmin, ymin, xmax, ymax, wnid))
    return corners, tuple(expected)


def _annotated(seed: int, members: Sequence[GeneratedMember], split: str):
    """The images that get an XML file: a subset of train, all of validation but one."""
    if split == VALIDATION:
        if len(members) < 2:
            return list(members)
        skipped = members[len(members) // 2].file_name
        return [m for m in members if m.file_name != skipped]
    return [m for m in members if _rng(seed, "bboxes", "annotated", m.file_name).random()
            < TRAIN_FRACTION] or list(members[:1])


def _split_entries(generated: GeneratedInput, split: str, seed: int):
    """(member name, XML) in the archive's order, expected boxes, orphan file names, and
    how many boxes reach outside their image."""
    members = sorted(generated.split(split), key=lambda m: m.file_name)
    names = class_names()
    entries, expected, clamped = [], {}, 0
    images = [(m.file_name, names[m.label], _image_size(m))
              for m in _annotated(seed, members, split)]
    if split == TRAIN:
        wnid = names[members[0].label]
        orphan = f"{wnid}_{ORPHAN_TRAIN_NUMBER}.JPEG"
    else:
        wnids = validation_wnids()
        taken = {m.file_name for m in members}
        number = next(n for n in range(len(wnids), 0, -1)
                      if f"ILSVRC2012_val_{n:08d}.JPEG" not in taken)
        orphan = f"ILSVRC2012_val_{number:08d}.JPEG"
        wnid = wnids[number - 1]
    images.append((orphan, wnid, images[0][2]))
    images.sort(key=lambda image: image[0])
    for i, (file_name, wnid, size) in enumerate(images):
        folder = wnid if split == TRAIN else VALIDATION_FOLDER
        corners, boxes = _annotate(seed, split, file_name, wnid, size)
        noisy = NOISY_FILENAME if split == TRAIN and i == 0 else None
        xml = annotation_xml(_stem(file_name), folder, wnid, size, corners, filename=noisy)
        entries.append((f"{folder}/{_stem(file_name)}.xml", xml))
        expected[file_name] = boxes
        clamped += sum(_outside(c, size) for c in corners)
    return entries, expected, (orphan,), clamped


def _class_archives(entries: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Train as one `<wnid>.tar.gz` per class, each holding `<wnid>/<name>.xml`."""
    by_class: dict[str, list[tuple[str, bytes]]] = {}
    for name, data in entries:
        by_class.setdefault(name.split("/", 1)[0], []).append((name, data))
    return [(f"{wnid}.tar.gz", tar_gz_bytes(files, with_dirs=True))
            for wnid, files in sorted(by_class.items())]


def write_bboxes(
    directory: str, generated: GeneratedInput, *, seed: int = 0, class_archives: bool = False
) -> GeneratedBoxes:
    """Writes the box archives for the train and validation images of `generated` (those
    splits it has) into `directory`, each under a temporary name first."""
    paths, expected, orphans, clamped = {}, {}, {}, {}
    os.makedirs(directory, exist_ok=True)
    for split in (TRAIN, VALIDATION):
        if not generated.split(split):
            continue
        entries, expected[split], orphans[split], clamped[split] = _split_entries(
            generated, split, seed)
        if split == TRAIN and class_archives:
            data = tar_gz_bytes(_class_archives(entries))
        else:
            data = tar_gz_bytes(entries, with_dirs=True)
        name = BBOX_ARCHIVES[split]
        paths[split] = os.path.join(directory, name)
        tmp = os.path.join(directory, f".{name}.partial")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, paths[split])
    if not paths:
        raise ValueError("bounding boxes need the train or the validation split")
    return GeneratedBoxes(paths, expected, orphans, clamped)


def summary_lines(written: GeneratedBoxes) -> list[str]:
    """What `generate --bboxes` prints: per archive, its XML files, boxes, size, checksum."""
    lines = []
    for split, path in written.paths.items():
        with open(path, "rb") as f:
            data = f.read()
        lines.append(
            f"{os.path.basename(path)}: {len(written.expected[split])} XML files "
            f"({len(written.orphans[split])} for an image not generated), "
            f"{written.num_boxes(split)} boxes, {len(data):,} bytes, "
            f"sha256 {hashlib.sha256(data).hexdigest()[:16]}"
        )
    return lines
