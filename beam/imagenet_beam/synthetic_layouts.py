"""The synthetic image set in the other layouts people hold ImageNet in.

`synthetic.generate_manual_dir` writes image-net.org's tarballs; `write_layout` writes the
same images (same bytes, same file names) as an extracted PyTorch ImageFolder, the Kaggle
"ImageNet Object Localization Challenge" copy (extracted or as its one .tar.gz) or the
Hugging Face `ILSVRC/imagenet-1k` archives, so tests can prove a converter gives identical
shards from every layout. On request each layout also carries the stray files real copies
pick up (`.DS_Store`, `Thumbs.db`, `__MACOSX/._*`, a readme beside the images).

The test split is always the 2019-patched one, as every copy in circulation holds it.
Output is deterministic: file contents depend only on the generated images, archives have
fixed tar headers and gzip headers without a time, files carry the tar's fixed mtime.
Only the standard library, numpy and Pillow are used.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from imagenet_beam.dataset import (
    SPLITS,
    TEST,
    TEST_ARCHIVE_PATCHED,
    TRAIN,
    TRAIN_ARCHIVE,
    VALIDATION,
    VALIDATION_ARCHIVE,
    class_names,
    validation_wnids,
)
from imagenet_beam.synthetic import (
    TAR_FORMAT,
    TAR_MTIME,
    GeneratedInput,
    GeneratedMember,
    _tar_info,
    generate_manual_dir,
    summary_lines,
)

IMAGEFOLDER = "imagefolder"
KAGGLE = "kaggle"
HUGGINGFACE = "huggingface"
TARBALLS = "tarballs"

# Command-line names: (layout, variant).
CLI_LAYOUTS: dict[str, tuple[str, dict[str, object]]] = {
    IMAGEFOLDER: (IMAGEFOLDER, {}),
    KAGGLE: (KAGGLE, {}),
    "kaggle-packed": (KAGGLE, {"packed": True}),
    HUGGINGFACE: (HUGGINGFACE, {}),
    TARBALLS: (TARBALLS, {}),
}

IMAGEFOLDER_DIRS = {TRAIN: "train", VALIDATION: "val", TEST: "test"}

KAGGLE_ARCHIVE = "imagenet_object_localization_patched2019.tar.gz"
KAGGLE_DATA = "ILSVRC/Data/CLS-LOC"
KAGGLE_ANNOTATIONS = "ILSVRC/Annotations/CLS-LOC"
KAGGLE_DIRS = {TRAIN: "train", VALIDATION: "val", TEST: "test"}
KAGGLE_SYNSET_MAPPING = "LOC_synset_mapping.txt"
KAGGLE_TRAIN_SOLUTION = "LOC_train_solution.csv"
KAGGLE_VAL_SOLUTION = "LOC_val_solution.csv"
KAGGLE_SAMPLE_SUBMISSION = "LOC_sample_submission.csv"
KAGGLE_CSV_HEADER = ("ImageId", "PredictionString")
KAGGLE_TRAIN_SOLUTION_ROWS = 3
KAGGLE_VAL_ANNOTATIONS = 2
KAGGLE_TRAIN_ANNOTATIONS = 1

HF_DATA_DIR = "data"
HF_TRAIN_ARCHIVES = tuple(f"train_images_{i}.tar.gz" for i in range(5))
HF_VAL_ARCHIVE = "val_images.tar.gz"
HF_TEST_ARCHIVE = "test_images.tar.gz"

DIR_MODE = 0o755
GZIP_LEVEL = 6
FALLBACK_SIZE = (64, 48)  # for boxes on an image Pillow cannot open

# What the stray files start with, so a converter sniffing content is not fooled either.
DS_STORE = b"\x00\x00\x00\x01Bud1" + b"\x00" * 32
THUMBS_DB = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 32
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 16
README = b"Images downloaded from image-net.org; see the license there.\n"
MACOSX = "__MACOSX"


@dataclasses.dataclass
class LayoutWritten:
    """What `write_layout` wrote under `root`; paths are relative, with `/`.

    `locations` says where each image went, keyed by (split, file_name): a file path, or
    `<archive path>/<member name>` for an image inside an archive (for a tar inside a tar,
    both). `strays` names the stray files the same way.
    """

    layout: str
    root: str
    variant: dict[str, object]
    files: list[str]
    folders: list[str]
    strays: list[str]
    locations: dict[tuple[str, str], str]


@dataclasses.dataclass
class _Tree:
    """What a layout consists of, before it is written: files in writing (and tar) order."""

    files: list[tuple[str, bytes]] = dataclasses.field(default_factory=list)
    strays: list[str] = dataclasses.field(default_factory=list)
    locations: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)

    def add(self, path: str, data: bytes) -> None:
        self.files.append((path, data))

    def add_image(self, member: GeneratedMember, path: str, location: str | None = None) -> None:
        self.add(path, member.data)
        self.locations[(member.split, member.file_name)] = location or path

    def add_strays(self, entries: Iterable[tuple[str, bytes]], prefix: str = "") -> None:
        for path, data in entries:
            self.add(path, data)
            self.strays.append(prefix + path)


def _wnid(train_file_name: str) -> str:
    return train_file_name.split("_", 1)[0]


def _stem(file_name: str) -> str:
    return os.path.splitext(file_name)[0]


def _validation_wnid(file_name: str) -> str:
    number = int(_stem(file_name).rsplit("_", 1)[1])
    return validation_wnids()[number - 1]


def wnid_of(member: GeneratedMember) -> str | None:
    """The class of an image as its name or the validation labels say; None for test."""
    if member.split == TRAIN:
        return _wnid(member.file_name)
    if member.split == VALIDATION:
        return _validation_wnid(member.file_name)
    return None


def _by_name(members: Iterable[GeneratedMember]) -> list[GeneratedMember]:
    return sorted(members, key=lambda m: m.file_name)


def _by_class(members: Sequence[GeneratedMember]) -> list[GeneratedMember]:
    """Class folder by class folder (sorted wnids), each in the generated (tar) order."""
    return sorted(members, key=lambda m: _wnid(m.file_name))


def _stray_files(split_root: str, first_image: str) -> list[tuple[str, bytes]]:
    """Strays at the split root and beside `first_image`, plus a `__MACOSX/` shadow of it."""
    folder = posixpath.dirname(first_image)
    inside = posixpath.relpath(folder, split_root)
    shadow_dir = posixpath.join(split_root, MACOSX, *([] if inside == "." else [inside]))
    found = [(f"{split_root}/.DS_Store", DS_STORE), (f"{split_root}/Thumbs.db", THUMBS_DB)]
    if folder != split_root:
        found += [(f"{folder}/.DS_Store", DS_STORE), (f"{folder}/Thumbs.db", THUMBS_DB)]
    found += [
        (f"{folder}/readme.txt", README),
        (f"{shadow_dir}/._{posixpath.basename(first_image)}", APPLE_DOUBLE),
    ]
    return found


def _add_split_strays(tree: _Tree, split_root: str, paths: Sequence[str], prefix: str = "") -> None:
    if paths:
        tree.add_strays(_stray_files(split_root, min(paths)), prefix)


def _inner_class_tars(generated: GeneratedInput) -> list[tuple[str, bytes]]:
    """The class tars of the generated train tar as stored, byte for byte, in tar order."""
    with tarfile.open(os.path.join(generated.manual_dir, TRAIN_ARCHIVE), mode="r:") as tar:
        return [(info.name, tar.extractfile(info).read()) for info in tar if info.isfile()]


def _imagefolder(
    generated: GeneratedInput,
    splits: Sequence[str],
    *,
    strays: bool,
    train_tars: bool,
    val_class_folders: bool,
    val_folder_name: str,
) -> _Tree:
    tree = _Tree()
    dirs = {**IMAGEFOLDER_DIRS, VALIDATION: val_folder_name}
    for split in splits:
        root = dirs[split]
        members = generated.split(split)
        written = []
        if split == TRAIN and train_tars:
            by_name = {m.file_name: m for m in members}
            for name, data in _inner_class_tars(generated):
                path = f"{root}/{name}"
                tree.add(path, data)
                written.append(path)
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as inner:
                    for file_name in inner.getnames():
                        tree.locations[(TRAIN, file_name)] = f"{path}/{file_name}"
                        by_name.pop(file_name)
            if by_name:
                raise ValueError(f"images missing from {TRAIN_ARCHIVE}: {sorted(by_name)}")
        else:
            if split == TRAIN:
                members = _by_class(members)
            for m in members:
                folder = wnid_of(m) if split == TRAIN or val_class_folders else None
                path = "/".join([root, *([folder] if folder else []), m.file_name])
                tree.add_image(m, path)
                written.append(path)
        if strays:
            _add_split_strays(tree, root, written)
    return tree


def _image_size(member: GeneratedMember) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(member.data)) as im:
            return im.size
    except Exception:
        return FALLBACK_SIZE


def _boxes(member: GeneratedMember) -> list[tuple[int, int, int, int]]:
    """One or two plausible (xmin, ymin, xmax, ymax) boxes inside the image, from its name."""
    width, height = _image_size(member)
    digest = hashlib.sha256(f"boxes {member.split} {member.file_name}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:16], "big"))
    boxes = []
    for _ in range(int(rng.integers(1, 3))):
        xmin = int(rng.integers(0, max(1, width // 2)))
        ymin = int(rng.integers(0, max(1, height // 2)))
        xmax = int(rng.integers(xmin + 1, max(xmin + 2, width)))
        ymax = int(rng.integers(ymin + 1, max(ymin + 2, height)))
        boxes.append((xmin, ymin, xmax, ymax))
    return boxes


def _prediction_string(wnid: str, boxes: Iterable[tuple[int, int, int, int]]) -> str:
    return " ".join(f"{wnid} {x0} {y0} {x1} {y1}" for x0, y0, x1, y1 in boxes)


def _csv_bytes(rows: Iterable[Sequence[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(KAGGLE_CSV_HEADER)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _solution(members: Sequence[GeneratedMember]) -> bytes:
    """Rows in reverse file-name order: a reader must not assume the CSV is sorted."""
    rows = [(_stem(m.file_name), _prediction_string(wnid_of(m), _boxes(m))) for m in members]
    return _csv_bytes(sorted(rows, reverse=True))


def _annotation_xml(member: GeneratedMember, folder: str) -> bytes:
    """A small PASCAL VOC-style annotation with the same boxes as the solution CSV."""
    width, height = _image_size(member)
    objects = "".join(
        f"\t<object>\n\t\t<name>{wnid_of(member)}</name>\n\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n\t\t<bndbox>\n"
        f"\t\t\t<xmin>{x0}</xmin>\n\t\t\t<ymin>{y0}</ymin>\n"
        f"\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for x0, y0, x1, y1 in _boxes(member)
    )
    return (
        f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{_stem(member.file_name)}"
        f"</filename>\n\t<source>\n\t\t<database>ILSVRC_2012</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
        f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{objects}</annotation>\n"
    ).encode()


def _synset_mapping() -> bytes:
    return "".join(
        f"{wnid} class {i}, synthetic class {i}\n" for i, wnid in enumerate(sorted(class_names()))
    ).encode("utf-8")


def _kaggle(
    generated: GeneratedInput, splits: Sequence[str], *, strays: bool, packed: bool
) -> _Tree:
    """The extracted tree (the packed archive is made from it by `_pack_kaggle`).

    Annotations and images first, the LOC_* files last: a reader of the packed archive
    meets the images before any table.
    """
    tree = _Tree()
    train = _by_name(generated.split(TRAIN)) if TRAIN in splits else []
    validation = _by_name(generated.split(VALIDATION)) if VALIDATION in splits else []
    for m in validation[:KAGGLE_VAL_ANNOTATIONS]:
        tree.add(f"{KAGGLE_ANNOTATIONS}/val/{_stem(m.file_name)}.xml", _annotation_xml(m, "val"))
    for m in train[:KAGGLE_TRAIN_ANNOTATIONS]:
        wnid = wnid_of(m)
        path = f"{KAGGLE_ANNOTATIONS}/train/{wnid}/{_stem(m.file_name)}.xml"
        tree.add(path, _annotation_xml(m, wnid))
    for split in splits:
        root = f"{KAGGLE_DATA}/{KAGGLE_DIRS[split]}"
        members = generated.split(split)
        if split == TRAIN:
            members = _by_class(members)
        paths = []
        for m in members:
            folder = [wnid_of(m)] if split == TRAIN else []
            path = "/".join([root, *folder, m.file_name])
            tree.add_image(m, path)
            paths.append(path)
        if strays:
            _add_split_strays(tree, root, paths)
    test_ids = [_stem(m.file_name) for m in _by_name(generated.split(TEST))] or [
        "ILSVRC2012_test_00000001"
    ]
    first_wnid = sorted(class_names())[0]
    tree.add(
        KAGGLE_SAMPLE_SUBMISSION,
        _csv_bytes((i, _prediction_string(first_wnid, [(0, 0, 10, 10)])) for i in test_ids),
    )
    tree.add(KAGGLE_SYNSET_MAPPING, _synset_mapping())
    tree.add(KAGGLE_TRAIN_SOLUTION, _solution(train[:KAGGLE_TRAIN_SOLUTION_ROWS]))
    tree.add(KAGGLE_VAL_SOLUTION, _solution(validation))
    return _pack_kaggle(tree) if packed else tree


def _dir_info(name: str) -> tarfile.TarInfo:
    info = _tar_info(name, 0)
    info.type = tarfile.DIRTYPE
    info.mode = DIR_MODE
    return info


def tar_gz_bytes(entries: Iterable[tuple[str, bytes]], *, with_dirs: bool = False) -> bytes:
    """A gzipped tar of (name, bytes) in the given order, with fixed tar and gzip headers.

    `with_dirs` adds a directory member before the first file under each folder, as a tar
    made from an extracted tree has.
    """
    buf = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=GZIP_LEVEL)
        as gz,
        tarfile.open(fileobj=gz, mode="w", format=TAR_FORMAT) as tar,
    ):
        seen: set[str] = set()
        for name, data in entries:
            if with_dirs:
                parts = name.split("/")[:-1]
                for depth in range(1, len(parts) + 1):
                    folder = "/".join(parts[:depth])
                    if folder not in seen:
                        seen.add(folder)
                        tar.addfile(_dir_info(folder))
            tar.addfile(_tar_info(name, len(data)), io.BytesIO(data))
    return buf.getvalue()


def _pack_kaggle(extracted: _Tree) -> _Tree:
    packed = _Tree()
    packed.add(KAGGLE_ARCHIVE, tar_gz_bytes(extracted.files, with_dirs=True))
    packed.strays = [f"{KAGGLE_ARCHIVE}/{path}" for path in extracted.strays]
    packed.locations = {k: f"{KAGGLE_ARCHIVE}/{v}" for k, v in extracted.locations.items()}
    return packed


def hf_member_name(member: GeneratedMember) -> str:
    """`<original stem>_<wnid>.JPEG`; test images keep their name (they have no class)."""
    wnid = wnid_of(member)
    if wnid is None:
        return member.file_name
    stem, ext = os.path.splitext(member.file_name)
    return f"{stem}_{wnid}{ext}"


def _huggingface(
    generated: GeneratedInput, splits: Sequence[str], *, strays: bool, data_subdir: bool
) -> _Tree:
    """Train round-robin over five archives in file-name order; val and test in tar order."""
    folder = f"{HF_DATA_DIR}/" if data_subdir else ""
    archives: list[tuple[str, list[GeneratedMember]]] = []
    if TRAIN in splits:
        train = _by_name(generated.split(TRAIN))
        n = len(HF_TRAIN_ARCHIVES)
        archives += [(name, train[i::n]) for i, name in enumerate(HF_TRAIN_ARCHIVES)]
    if VALIDATION in splits:
        archives.append((HF_VAL_ARCHIVE, generated.split(VALIDATION)))
    if TEST in splits:
        archives.append((HF_TEST_ARCHIVE, generated.split(TEST)))
    tree = _Tree()
    for name, members in archives:
        path = folder + name
        entries = [(hf_member_name(m), m.data) for m in members]
        for m, (member_name, _) in zip(members, entries, strict=True):
            tree.locations[(m.split, m.file_name)] = f"{path}/{member_name}"
        if strays:
            shadow = f"{MACOSX}/._{entries[0][0] if entries else 'image.JPEG'}"
            entries += [(".DS_Store", DS_STORE), (shadow, APPLE_DOUBLE)]
            tree.strays += [f"{path}/.DS_Store", f"{path}/{shadow}"]
        tree.add(path, tar_gz_bytes(entries, with_dirs=True))
    return tree


def _split_archives(generated: GeneratedInput, split: str) -> list[str]:
    if split == TRAIN:
        return [a for a in generated.archives if a == TRAIN_ARCHIVE]
    if split == VALIDATION:
        return [a for a in generated.archives if a == VALIDATION_ARCHIVE]
    return [a for a in generated.archives if a not in (TRAIN_ARCHIVE, VALIDATION_ARCHIVE)]


def _tarballs(generated: GeneratedInput, splits: Sequence[str], *, strays: bool) -> _Tree:
    """The generated tarballs themselves (copied when written elsewhere)."""
    tree = _Tree()
    for split in splits:
        for name in _split_archives(generated, split):
            with open(os.path.join(generated.manual_dir, name), "rb") as f:
                tree.add(name, f.read())
        for m in generated.split(split):
            inner = f"{_wnid(m.file_name)}.tar/" if split == TRAIN else ""
            tree.locations[(split, m.file_name)] = f"{m.archive}/{inner}{m.file_name}"
    if strays:
        tree.add_strays([(".DS_Store", DS_STORE)])
    return tree


@dataclasses.dataclass(frozen=True)
class _Layout:
    build: Callable[..., _Tree]
    variants: Mapping[str, object]  # name → default (beside `splits` and `strays`)
    needs_patched_test: bool = True


LAYOUTS: dict[str, _Layout] = {
    IMAGEFOLDER: _Layout(
        _imagefolder,
        {"train_tars": False, "val_class_folders": False, "val_folder_name": "val"},
    ),
    KAGGLE: _Layout(_kaggle, {"packed": False}),
    HUGGINGFACE: _Layout(_huggingface, {"data_subdir": True}),
    TARBALLS: _Layout(_tarballs, {}, needs_patched_test=False),
}
COMMON_VARIANTS = ("splits", "strays")


def _splits(generated: GeneratedInput, wanted: Iterable[str] | None) -> list[str]:
    present = [s for s in SPLITS if generated.split(s)]
    if wanted is None:
        return present
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = sorted(set(wanted) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown splits {unknown}; choose from {list(SPLITS)}")
    absent = [s for s in SPLITS if s in wanted and s not in present]
    if absent:
        raise ValueError(f"the generated input has no {', '.join(absent)} images to write")
    return [s for s in SPLITS if s in wanted]


def _has_patched_test(generated: GeneratedInput) -> bool:
    return generated.patch_archive is not None or TEST_ARCHIVE_PATCHED in generated.archives


def _write_file(path: str, data: bytes) -> None:
    """Under a temporary name first, so a watcher never sees a half-written file."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")
    with open(tmp, "wb") as f:
        f.write(data)
    os.utime(tmp, (TAR_MTIME, TAR_MTIME))
    os.replace(tmp, path)


def write_layout(
    generated: GeneratedInput, layout: str, target_dir: str, **variant: object
) -> LayoutWritten:
    """Write the generated images into `target_dir` in `layout`; see the module docstring.

    Variants: `splits` (default: every generated split), `strays` (False) and per layout
    imagefolder: `train_tars`, `val_class_folders`, `val_folder_name` ("val");
    kaggle: `packed`; huggingface: `data_subdir` (True); tarballs: none.
    Files of the same names are replaced; other files in `target_dir` are left alone.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    spec = LAYOUTS[layout]
    known = (*COMMON_VARIANTS, *spec.variants)
    unknown = sorted(set(variant) - set(known))
    if unknown:
        raise ValueError(
            f"layout {layout} has no variant {', '.join(unknown)}; its variants: {', '.join(known)}"
        )
    options = {**spec.variants, "strays": False, **variant}
    splits = _splits(generated, options.pop("splits", None))
    if spec.needs_patched_test and TEST in splits and not _has_patched_test(generated):
        raise ValueError(
            f"the {layout} layout holds the 2019-patched test images, but the generated input "
            "has only the 2012 test tar; generate with test_archives including 'patch' or "
            "'patched'"
        )
    tree = spec.build(generated, splits, **options)

    target = os.path.abspath(target_dir)
    same_dir = os.path.realpath(target) == os.path.realpath(generated.manual_dir)
    folders: set[str] = set()
    for path, data in tree.files:
        parts = path.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
        if layout == TARBALLS and same_dir and path in generated.archives:
            continue
        full = os.path.join(target, *parts)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        _write_file(full, data)
    os.makedirs(target, exist_ok=True)
    return LayoutWritten(
        layout=layout,
        root=target,
        variant=dict(variant),
        files=[path for path, _ in tree.files],
        folders=sorted(folders),
        strays=tree.strays,
        locations=tree.locations,
    )


def _container(location: str) -> tuple[str, str]:
    """(the archive or folder an image location is in, "archive" or "folder")."""
    parts = location.split("/")
    for i, part in enumerate(parts[:-1]):
        if part.endswith((".tar", ".tar.gz")):
            return "/".join(parts[: i + 1]), "archive"
    return posixpath.dirname(location), "folder"


def layout_summary_lines(written: LayoutWritten) -> list[str]:
    """One line per split: how many images, in how many folders or archives, an example
    (and one for the strays)."""
    lines = []
    for split in SPLITS:
        where = sorted(loc for (s, _), loc in written.locations.items() if s == split)
        if not where:
            continue
        containers = {_container(loc) for loc in where}
        kinds = {kind for _, kind in containers}
        noun = kinds.pop() if len(kinds) == 1 else "place"
        plural = "" if len(containers) == 1 else "s"
        lines.append(
            f"{split}: {len(where)} images in {len(containers)} {noun}{plural} "
            f"({written.layout}), e.g. {where[0]}"
        )
    if written.strays:
        lines.append(f"strays: {len(written.strays)} files, e.g. {written.strays[0]}")
    return lines


def generate_in_layout(
    manual_dir: str, cli_layout: str, options: Mapping[str, object], **variant: object
) -> list[str]:
    """The command line's `generate --layout`: tarballs into a temporary folder, then the
    layout into `manual_dir`. Returns the summary lines to print."""
    layout, implied = CLI_LAYOUTS[cli_layout]
    with tempfile.TemporaryDirectory(prefix="imagenet-generate-") as work:
        generated = generate_manual_dir(work, **options)
        written = write_layout(generated, layout, manual_dir, **implied, **variant)
        if layout == TARBALLS:
            copied = dataclasses.replace(generated, manual_dir=written.root)
            return summary_lines(copied) + [f"stray: {s}" for s in written.strays]
        return layout_summary_lines(written)


__all__ = [
    "CLI_LAYOUTS",
    "HUGGINGFACE",
    "IMAGEFOLDER",
    "KAGGLE",
    "LAYOUTS",
    "TARBALLS",
    "LayoutWritten",
    "generate_in_layout",
    "hf_member_name",
    "layout_summary_lines",
    "tar_gz_bytes",
    "wnid_of",
    "write_layout",
]
