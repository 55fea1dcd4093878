"""A small, deterministic ILSVRC 2012 manual dir, shaped exactly like image-net.org's tars.

The real archives are 150 GB and need registration, so tests, the demo and the benchmark
run on this stand-in instead. It reproduces the shapes the pipeline must cope with (a tar
of per-class tars, an unsorted validation tar, the 2019 test patch) and, on request, the
awkward and broken images found in the wild. The same arguments always give byte-identical
files: the image content comes from seeded RNGs keyed by file name, and tar headers carry
fixed times and owners.

Only Pillow, numpy and the standard library are used, so generating inputs never pulls in
TensorFlow.
"""

from __future__ import annotations

import argparse
import calendar
import dataclasses
import functools
import hashlib
import io
import os
import struct
import sys
import tarfile
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageCms

from imagenet_beam.dataset import (
    SPLITS,
    TEST,
    TEST_ARCHIVE_2012,
    TEST_ARCHIVE_PATCHED,
    TEST_LABEL,
    TFDS_CMYK_NAMES,
    TFDS_PNG_NAMES,
    TRAIN,
    TRAIN_ARCHIVE,
    VALIDATION,
    VALIDATION_ARCHIVE,
    class_index,
    class_names,
    validation_wnids,
)

AWKWARD_KINDS = (
    "cmyk_tfds_name",
    "cmyk_other_name",
    "png_tfds_name",
    "png_other_name",
    "grayscale",
    "progressive",
    "exif_rotated",
    "icc_profile",
    "trailing_bytes",
    "tiny",
    "large",
)
BROKEN_KINDS = ("truncated", "empty", "not_an_image", "huge_dimensions")
PLAIN = "plain"

PATCH_ARCHIVE = "ILSVRC2012_img_test_patch_v10102019.tar"
TEST_ARCHIVE_CHOICES = {
    "2012": TEST_ARCHIVE_2012,
    "patch": PATCH_ARCHIVE,
    "patched": TEST_ARCHIVE_PATCHED,
}

TFDS_CMYK_FILE_NAME = "n01739381_1309.JPEG"
TFDS_PNG_FILE_NAME = "n02105855_2933.JPEG"
TFDS_NAMED_KINDS = {
    "cmyk_tfds_name": TFDS_CMYK_FILE_NAME,
    "png_tfds_name": TFDS_PNG_FILE_NAME,
}
VALIDATION_AWKWARD_KINDS = ("grayscale", "cmyk_other_name")
TEST_AWKWARD_KINDS = ("png_other_name",)

JPEG_QUALITY = 90
SIZE_JITTER = 3
LARGE_SIZE = (3000, 2000)
HUGE_DIMENSION = 60000
EXIF_ORIENTATION_TAG = 0x0112
EXIF_ROTATED_ORIENTATION = 6
TRAILING_JUNK = b"\x00" * 16 + b"junk after the JPEG end-of-image marker\n"
NOT_AN_IMAGE_TEXT = b"<html><body><h1>404 Not Found</h1></body></html>\n"
JPEG_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3})
ICC_DATE_OFFSET = 24
ICC_FIXED_DATE = struct.pack(">6H", 2012, 1, 1, 0, 0, 0)

TAR_FORMAT = tarfile.USTAR_FORMAT
TAR_MTIME = calendar.timegm((2012, 6, 1, 0, 0, 0))
TAR_MODE = 0o644
TRAIN_NUMBER_RANGE = 30000


@dataclasses.dataclass
class GeneratedMember:
    """One image as it is stored in a generated tar, with what the pipeline should output."""

    split: str
    file_name: str
    label: int
    kind: str
    archive: str
    data: bytes
    patched: bool = False


@dataclasses.dataclass
class GeneratedInput:
    """What was written, so tests can compare pipeline output against it image by image.

    `members` lists each split in tar order (train: outer then inner order). For test it
    describes the patched content whenever the patch or the patched tar was written.
    `archives` lists the tar files written, in writing order.
    """

    manual_dir: str
    members: list[GeneratedMember]
    replaced_by_patch: list[str]
    patch_archive: str | None
    archives: list[str] = dataclasses.field(default_factory=list)

    def split(self, name: str) -> list[GeneratedMember]:
        return [m for m in self.members if m.split == name]

    def by_name(self, split: str) -> dict[str, GeneratedMember]:
        return {m.file_name: m for m in self.split(split)}


def _rng(seed: int, *key: object) -> np.random.Generator:
    """An RNG keyed by name, so an image's content does not depend on what else is made."""
    digest = hashlib.sha256(repr((seed, *key)).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def _jittered_size(rng: np.random.Generator, size: tuple[int, int]) -> tuple[int, int]:
    jitter = rng.integers(-SIZE_JITTER, SIZE_JITTER + 1, size=2)
    return max(1, size[0] + int(jitter[0])), max(1, size[1] + int(jitter[1]))


def _pixels(rng: np.random.Generator, width: int, height: int, *, noise: bool) -> np.ndarray:
    """Gradients and a disc (plus noise for small images): distinct yet compressible."""
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    base = rng.uniform(40, 215, 3).astype(np.float32)
    dx = rng.uniform(-80, 80, 3).astype(np.float32)
    dy = rng.uniform(-80, 80, 3).astype(np.float32)
    img = base + dx * x + dy * y
    cx, cy = rng.uniform(0.2, 0.8, 2)
    radius = rng.uniform(0.1, 0.35)
    disc = ((x[..., 0] - cx) ** 2 + (y[..., 0] - cy) ** 2) < radius**2
    img[disc] = rng.uniform(0, 255, 3).astype(np.float32)
    if noise:
        img += rng.normal(0, 10, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _encode(im: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        options.setdefault("quality", JPEG_QUALITY)
    im.save(buf, fmt, **options)
    return buf.getvalue()


@functools.cache
def _srgb_profile() -> bytes:
    """An sRGB ICC profile; lcms stamps the creation time in it, which is pinned here."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    end = ICC_DATE_OFFSET + len(ICC_FIXED_DATE)
    return profile[:ICC_DATE_OFFSET] + ICC_FIXED_DATE + profile[end:]


def set_jpeg_dimensions(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header's size, leaving a file whose header lies about its pixels."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in JPEG_SOF_MARKERS:
            out = bytearray(data)
            out[pos + 5 : pos + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        pos += 2 + length
    raise ValueError("no JPEG frame header found")


def image_bytes(kind: str, rng: np.random.Generator, size: tuple[int, int]) -> bytes:
    """The stored bytes of one image of the given kind (plain, awkward or broken)."""
    if kind == "tiny":
        width, height = 1, 1
    elif kind == "large":
        width, height = LARGE_SIZE
    else:
        width, height = _jittered_size(rng, size)
    im = Image.fromarray(_pixels(rng, width, height, noise=kind != "large"), "RGB")
    if kind in ("cmyk_tfds_name", "cmyk_other_name"):
        return _encode(im.convert("CMYK"))
    if kind in ("png_tfds_name", "png_other_name"):
        return _encode(im, "PNG")
    if kind == "grayscale":
        return _encode(im.convert("L"))
    if kind == "progressive":
        return _encode(im, progressive=True)
    if kind == "exif_rotated":
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = EXIF_ROTATED_ORIENTATION
        return _encode(im, exif=exif)
    if kind == "icc_profile":
        return _encode(im, icc_profile=_srgb_profile())
    if kind == "trailing_bytes":
        return _encode(im) + TRAILING_JUNK
    if kind == "truncated":
        data = _encode(im)
        return data[: len(data) // 2]
    if kind == "empty":
        return b""
    if kind == "not_an_image":
        return NOT_AN_IMAGE_TEXT
    if kind == "huge_dimensions":
        return set_jpeg_dimensions(_encode(im), HUGE_DIMENSION, HUGE_DIMENSION)
    if kind in (PLAIN, "tiny", "large"):
        return _encode(im)
    raise ValueError(f"unknown image kind {kind!r}")


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_all(tar: tarfile.TarFile, entries: Iterable[tuple[str, bytes]]) -> None:
    for name, data in entries:
        tar.addfile(_tar_info(name, len(data)), io.BytesIO(data))


def tar_bytes(entries: Iterable[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar of (name, bytes) in the given order, with fixed headers."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=TAR_FORMAT) as tar:
        _add_all(tar, entries)
    return buf.getvalue()


def _write_tar(path: str, entries: Iterable[tuple[str, bytes]]) -> None:
    """Write under a temporary name first, so a watcher never sees a half-written tar."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")
    with open(tmp, "wb") as f, tarfile.open(fileobj=f, mode="w", format=TAR_FORMAT) as tar:
        _add_all(tar, entries)
    os.replace(tmp, path)


def _kinds(requested: bool | Iterable[str], allowed: Sequence[str], what: str) -> list[str]:
    """The requested kinds in canonical order, so the output does not depend on their order."""
    if requested is True:
        return list(allowed)
    if requested is False:
        return []
    wanted = set([requested] if isinstance(requested, str) else requested)
    unknown = sorted(wanted - set(allowed))
    if unknown:
        raise ValueError(f"unknown {what} kinds {unknown}; choose from {list(allowed)}")
    return [k for k in allowed if k in wanted]


def _choose(values: Iterable[str], allowed: Iterable[str], what: str) -> list[str]:
    values = [values] if isinstance(values, str) else list(values)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; choose from {sorted(allowed)}")
    return [v for v in allowed if v in values]


def _wnid_of(train_file_name: str) -> str:
    return train_file_name.split("_", 1)[0]


def choose_classes(num_classes: int, required: Sequence[str], seed: int) -> list[str]:
    """`num_classes` real wnids in label order, always including `required`."""
    names = class_names()
    if not len(required) <= num_classes <= len(names):
        raise ValueError(f"num_classes must be in {max(1, len(required))}..{len(names)}")
    rest = [w for w in names if w not in required]
    picked = _rng(seed, "classes").choice(
        len(rest), size=num_classes - len(required), replace=False
    )
    return sorted([*required, *(rest[int(i)] for i in picked)])


def _not_sorted_order(rng: np.random.Generator, n: int) -> list[int]:
    """A shuffle that is never the sorted order, so sorted-order assumptions show up."""
    order = [int(i) for i in rng.permutation(n)]
    if n > 1 and order == sorted(order):
        order = order[1:] + order[:1]
    return order


def _train_numbers(rng: np.random.Generator, wnid: str, count: int) -> list[int]:
    """Distinct image numbers for a class, never one of the names TFDS fixes by name."""
    reserved = TFDS_CMYK_NAMES | TFDS_PNG_NAMES
    high = max(TRAIN_NUMBER_RANGE, 2 * count + len(reserved) + 1)
    candidates = rng.choice(np.arange(1, high), size=count + len(reserved), replace=False)
    numbers = [int(k) for k in candidates if f"{wnid}_{int(k)}.JPEG" not in reserved]
    return numbers[:count]


def _train(
    wnids: Sequence[str],
    per_class: int,
    extra_kinds: Sequence[str],
    image_size: tuple[int, int],
    seed: int,
) -> list[GeneratedMember]:
    """Per-class lists of plain images plus the extra kinds, spread round-robin over classes."""
    by_class: dict[str, list[tuple[str | None, str]]] = {
        w: [(None, PLAIN)] * per_class for w in wnids
    }
    spread = 0
    for kind in extra_kinds:
        if kind in TFDS_NAMED_KINDS:
            name = TFDS_NAMED_KINDS[kind]
            by_class[_wnid_of(name)].append((name, kind))
        else:
            by_class[wnids[spread % len(wnids)]].append((None, kind))
            spread += 1
    members = []
    for wnid in wnids:
        entries = by_class[wnid]
        rng = _rng(seed, TRAIN, wnid)
        numbers = iter(_train_numbers(rng, wnid, sum(name is None for name, _ in entries)))
        named = [(name or f"{wnid}_{next(numbers)}.JPEG", kind) for name, kind in entries]
        label = class_index()[wnid]
        for i in rng.permutation(len(named)):
            name, kind = named[int(i)]
            data = image_bytes(kind, _rng(seed, TRAIN, name), image_size)
            members.append(GeneratedMember(TRAIN, name, label, kind, TRAIN_ARCHIVE, data))
    return members


def _validation_numbers(count: int, missing: Iterable[int], limit: int) -> list[int]:
    """The first `count` image numbers from 1 that are not in `missing`."""
    missing = set(missing)
    if any(not 1 <= n <= limit for n in missing):
        raise ValueError(f"missing_validation numbers must be in 1..{limit}")
    numbers = [n for n in range(1, limit + 1) if n not in missing][:count]
    if len(numbers) < count:
        raise ValueError(f"at most {limit - len(missing)} validation images exist")
    return numbers


def _validation(
    num: int,
    extra_kinds: Sequence[str],
    image_size: tuple[int, int],
    seed: int,
    missing: Iterable[int] = (),
) -> list[GeneratedMember]:
    kinds = [PLAIN] * num + list(extra_kinds)
    wnids = validation_wnids()
    numbers = _validation_numbers(len(kinds), missing, len(wnids))
    made = []
    for number, kind in zip(numbers, kinds, strict=True):
        name = f"ILSVRC2012_val_{number:08d}.JPEG"
        data = image_bytes(kind, _rng(seed, VALIDATION, name), image_size)
        label = class_index()[wnids[number - 1]]
        made.append(GeneratedMember(VALIDATION, name, label, kind, VALIDATION_ARCHIVE, data))
    return [made[i] for i in _not_sorted_order(_rng(seed, VALIDATION, "order"), len(made))]


def _test_2012(
    num: int, extra_kinds: Sequence[str], image_size: tuple[int, int], seed: int
) -> list[GeneratedMember]:
    kinds = [PLAIN] * num + list(extra_kinds)
    made = []
    for number, kind in enumerate(kinds, start=1):
        name = f"ILSVRC2012_test_{number:08d}.JPEG"
        data = image_bytes(kind, _rng(seed, TEST, name), image_size)
        made.append(GeneratedMember(TEST, name, TEST_LABEL, kind, TEST_ARCHIVE_2012, data))
    return [made[i] for i in _not_sorted_order(_rng(seed, TEST, "order"), len(made))]


def _test_patch(
    original: Sequence[GeneratedMember],
    num_plain: int,
    num_patched: int,
    image_size: tuple[int, int],
    seed: int,
) -> list[GeneratedMember]:
    """New bytes for `num_patched` of the plain test images, in file-name order."""
    if not 0 <= num_patched <= num_plain:
        raise ValueError(f"num_patched must be in 0..num_test ({num_plain})")
    numbers = sorted(
        int(i) + 1 for i in _rng(seed, "patch").choice(num_plain, num_patched, replace=False)
    )
    by_name = {m.file_name: m for m in original}
    patch = []
    for number in numbers:
        old = by_name[f"ILSVRC2012_test_{number:08d}.JPEG"]
        data = image_bytes(PLAIN, _rng(seed, "patch", old.file_name), image_size)
        patch.append(dataclasses.replace(old, data=data, archive=PATCH_ARCHIVE, patched=True))
    return patch


def generate_manual_dir(
    manual_dir: str,
    *,
    num_classes: int = 4,
    train_per_class: int = 6,
    num_validation: int = 12,
    missing_validation: Iterable[int] = (),
    num_test: int = 12,
    num_patched: int = 3,
    awkward: bool | Iterable[str] = False,
    broken: Iterable[str] = (),
    test_archives: Iterable[str] = ("2012", "patch"),
    splits: Iterable[str] = (TRAIN, VALIDATION, TEST),
    image_size: tuple[int, int] = (64, 48),
    seed: int = 0,
) -> GeneratedInput:
    """Write ILSVRC 2012-shaped tars into `manual_dir` and describe every image in them.

    `test_archives` picks among "2012" (the original, unpatched test tar), "patch" (only the
    replaced images, as PATCH_ARCHIVE) and "patched" (2012 with the patch merged in, named
    like image-net.org's current test tar). `missing_validation` lists validation image
    numbers the tar lacks (as a partial download would): the validation images are numbered
    from 1 skipping those, so sorted position and the number in the name disagree after the
    first gap (TFDS labels by sorted position and would mislabel them). Existing files of
    the same names are replaced; other files are left alone.
    """
    awkward_kinds = _kinds(awkward, AWKWARD_KINDS, "awkward")
    broken_kinds = _kinds(broken, BROKEN_KINDS, "broken")
    wanted_splits = _choose(splits, SPLITS, "splits")
    wanted_tests = _choose(test_archives, TEST_ARCHIVE_CHOICES, "test archives")
    if min(train_per_class, num_validation, num_test) < 0:
        raise ValueError("image counts must not be negative")
    if broken_kinds and TRAIN not in wanted_splits:
        raise ValueError("broken images go into train; add the train split")
    if TEST in wanted_splits and not wanted_tests:
        raise ValueError("the test split needs at least one of the test archives")
    os.makedirs(manual_dir, exist_ok=True)

    members: list[GeneratedMember] = []
    archives: list[str] = []
    replaced: list[str] = []
    patch_archive = None

    if TRAIN in wanted_splits:
        required = sorted(
            {_wnid_of(TFDS_NAMED_KINDS[k]) for k in awkward_kinds if k in TFDS_NAMED_KINDS}
        )
        wnids = choose_classes(num_classes, required, seed)
        train = _train(wnids, train_per_class, awkward_kinds + broken_kinds, image_size, seed)
        inner = {
            wnid: tar_bytes((m.file_name, m.data) for m in train if _wnid_of(m.file_name) == wnid)
            for wnid in wnids
        }
        _write_tar(os.path.join(manual_dir, TRAIN_ARCHIVE), ((f"{w}.tar", inner[w]) for w in wnids))
        archives.append(TRAIN_ARCHIVE)
        members += train

    if VALIDATION in wanted_splits:
        extra = [k for k in VALIDATION_AWKWARD_KINDS if k in awkward_kinds]
        validation = _validation(num_validation, extra, image_size, seed, missing_validation)
        _write_tar(
            os.path.join(manual_dir, VALIDATION_ARCHIVE),
            ((m.file_name, m.data) for m in validation),
        )
        archives.append(VALIDATION_ARCHIVE)
        members += validation

    if TEST in wanted_splits:
        extra = [k for k in TEST_AWKWARD_KINDS if k in awkward_kinds]
        original = _test_2012(num_test, extra, image_size, seed)
        patch = _test_patch(original, num_test, num_patched, image_size, seed)
        patch_by_name = {m.file_name: m for m in patch}
        merged = [patch_by_name.get(m.file_name, m) for m in original]
        for choice in wanted_tests:
            name = TEST_ARCHIVE_CHOICES[choice]
            content = {"2012": original, "patch": patch, "patched": merged}[choice]
            _write_tar(os.path.join(manual_dir, name), ((m.file_name, m.data) for m in content))
            archives.append(name)
        if "patch" in wanted_tests or "patched" in wanted_tests:
            replaced = [m.file_name for m in patch]
            patch_archive = PATCH_ARCHIVE if "patch" in wanted_tests else None
            if "patched" in wanted_tests:
                merged = [dataclasses.replace(m, archive=TEST_ARCHIVE_PATCHED) for m in merged]
            members += merged
        else:
            members += original

    return GeneratedInput(manual_dir, members, replaced, patch_archive, archives)


def summary_lines(generated: GeneratedInput) -> list[str]:
    """One line per written tar: what is in it, its size and a short sha256."""
    lines = []
    for name in generated.archives:
        path = os.path.join(generated.manual_dir, name)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        with tarfile.open(path) as tar:
            names = tar.getnames()
        if name == TRAIN_ARCHIVE:
            images = len(generated.split(TRAIN))
            what = f"{len(names)} class tars, {images} images"
        else:
            what = f"{len(names)} images"
        lines.append(f"{name}: {what}, {os.path.getsize(path):,} bytes, sha256 {digest[:16]}")
    return lines


def _comma_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _size(value: str) -> tuple[int, int]:
    width, _, height = value.lower().partition("x")
    return int(width), int(height)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write a synthetic manual dir and print one summary line per tar
    (with --layout: per split)."""
    from imagenet_beam import synthetic_layouts

    parser = argparse.ArgumentParser(
        prog="python -m imagenet_beam.synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--manual_dir", required=True)
    parser.add_argument("--num_classes", type=int, default=4)
    parser.add_argument("--train_per_class", type=int, default=6)
    parser.add_argument("--num_validation", type=int, default=12)
    parser.add_argument(
        "--missing_validation",
        default="",
        help="comma list of validation image numbers to leave out of the tar (gaps)",
    )
    parser.add_argument("--num_test", type=int, default=12)
    parser.add_argument("--num_patched", type=int, default=3)
    parser.add_argument(
        "--awkward",
        nargs="?",
        const="all",
        default="",
        help="add awkward images: all kinds, or a comma list of " + ",".join(AWKWARD_KINDS),
    )
    parser.add_argument("--broken", default="", help="comma list of " + ",".join(BROKEN_KINDS))
    parser.add_argument(
        "--test_archives", default="2012,patch", help="comma list of 2012,patch,patched"
    )
    parser.add_argument("--splits", default=",".join(SPLITS))
    parser.add_argument("--image_size", type=_size, default=(64, 48), help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--layout",
        choices=synthetic_layouts.CLI_LAYOUTS,
        default=synthetic_layouts.TARBALLS,
        help="write the images as image-net.org's tarballs (default) or as another copy "
        "people hold: an extracted ImageFolder, Kaggle's (extracted or packed), Hugging Face's",
    )
    layout_flags = {
        "val_class_folders": "imagefolder: validation in <wnid>/ folders, as valprep.sh leaves it",
        "train_tars": "imagefolder: train as the class tars train/<wnid>.tar",
        "strays": "add .DS_Store, Thumbs.db, __MACOSX/._* and readme.txt files",
    }
    for flag, text in layout_flags.items():
        parser.add_argument(f"--{flag}", action="store_true", help=text)
    parser.add_argument(
        "--devkit", action="store_true",
        help="also write ILSVRC2012_devkit_t12.tar.gz (tarballs layout): meta.mat in a "
        "shuffled id order, the validation ground truth, the generated train counts",
    )
    parser.add_argument(
        "--siblings", action="store_true",
        help="also write 1percent.txt, 10percent.txt and real.json (tarballs layout), for "
        "--dataset=imagenet2012_subset/1pct, /10pct and imagenet2012_real",
    )
    parser.add_argument(
        "--bboxes", action="store_true",
        help="also write ILSVRC2012_bbox_train_v2.tar.gz and ILSVRC2012_bbox_val_v3.tgz "
        "(tarballs layout): Pascal VOC XML for a subset of the train images and all "
        "validation images but one, some boxes outside the image, one XML per split for an "
        "image that does not exist",
    )
    args = parser.parse_args(argv)
    variant = {flag: True for flag in layout_flags if getattr(args, flag)}
    for extra in ("devkit", "siblings", "bboxes"):
        if getattr(args, extra) and (args.layout != synthetic_layouts.TARBALLS or variant):
            parser.error(f"--{extra} goes with the tarballs layout (image-net.org's downloads)")
    awkward: bool | list[str] = True if args.awkward == "all" else _comma_list(args.awkward)
    try:
        options = dict(
            num_classes=args.num_classes,
            train_per_class=args.train_per_class,
            num_validation=args.num_validation,
            missing_validation=[int(n) for n in _comma_list(args.missing_validation)],
            num_test=args.num_test,
            num_patched=args.num_patched,
            awkward=awkward,
            broken=_comma_list(args.broken),
            test_archives=_comma_list(args.test_archives),
            splits=_comma_list(args.splits),
            image_size=args.image_size,
            seed=args.seed,
        )
        if args.layout == synthetic_layouts.TARBALLS and not variant:
            generated = generate_manual_dir(args.manual_dir, **options)
            lines = summary_lines(generated)
            if args.devkit:
                from imagenet_beam import synthetic_devkit

                kit = synthetic_devkit.write_devkit(
                    args.manual_dir, seed=args.seed, generated=generated
                )
                lines.append(synthetic_devkit.summary_line(kit))
            if args.siblings:
                from imagenet_beam import synthetic_siblings

                siblings = synthetic_siblings.write_sibling_files(
                    args.manual_dir, generated, seed=args.seed
                )
                lines.append(
                    "subset lists: " + ", ".join(
                        f"{c} {len(n)} train images" for c, n in siblings.subsets.items()
                    ) + f"; real.json: {len(siblings.real)} validation entries"
                )
            if args.bboxes:
                from imagenet_beam import synthetic_bboxes

                boxes = synthetic_bboxes.write_bboxes(
                    args.manual_dir, generated, seed=args.seed
                )
                lines += synthetic_bboxes.summary_lines(boxes)
        else:
            lines = synthetic_layouts.generate_in_layout(
                args.manual_dir, args.layout, options, **variant
            )
    except ValueError as e:
        parser.error(str(e))
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
