"""A large ImageNet-shaped manual dir with realistic JPEGs, written as a stream.

The test generator (`imagenet_beam.synthetic`) builds small tars in memory; a benchmark
needs gigabytes. Sizes follow ImageNet's: ~110 KB and ~470×390 on average, with a few very
large and very small images. A pool of distinct JPEGs is encoded once and reused under
many names: throughput depends on bytes and member counts, not on pixels being unique.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import tarfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

from imagenet_beam import dataset

POOL_SIZE = 240
LARGE_EVERY = 100  # one image in a hundred is large (2000–3000 px)...
SMALL_EVERY = 97  # ...and about one in a hundred is small (under 100 px)
JPEG_QUALITY = 90
NOISE_SIGMA = 22.0  # tuned so the mean JPEG is ~110 KB at ~470×390
SPLIT_SHARE = {"train": 0.8, "validation": 0.1, "test": 0.1}
IMAGES_PER_CLASS = 200
TAR_MTIME = 1338508800  # 2012-06-01, fixed so that the same arguments give the same bytes


@dataclasses.dataclass
class RealisticInput:
    manual_dir: str
    counts: dict[str, int]
    total_bytes: int
    mean_width: float
    mean_height: float

    @property
    def num_images(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        mean_kb = self.total_bytes / self.num_images / 1e3
        return (
            f"{self.num_images} generated images, {mean_kb:.0f} KB and "
            f"{self.mean_width:.0f}x{self.mean_height:.0f} on average"
        )


def _dimensions(index: int, rng: np.random.Generator) -> tuple[int, int]:
    if index % LARGE_EVERY == LARGE_EVERY - 1:
        return int(rng.integers(2000, 3000)), int(rng.integers(1500, 2200))
    if index % SMALL_EVERY == SMALL_EVERY - 1:
        return int(rng.integers(40, 100)), int(rng.integers(30, 90))
    width = int(np.clip(rng.normal(480, 70), 200, 800))
    height = int(np.clip(width * rng.uniform(0.7, 0.9), 150, 700))
    return width, height


def _pool_image(index: int, seed: int) -> bytes:
    rng = np.random.default_rng([seed, index])
    width, height = _dimensions(index, rng)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    img = rng.uniform(40, 215, 3) + rng.uniform(-90, 90, 3) * x + rng.uniform(-90, 90, 3) * y
    for _ in range(6):  # some edges, as photos have
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        img[((x[..., 0] - cx) ** 2 + (y[..., 0] - cy) ** 2) < r * r] = rng.uniform(0, 255, 3)
    img = img + rng.normal(0, NOISE_SIGMA, img.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
        out, "JPEG", quality=JPEG_QUALITY
    )
    return out.getvalue()


def image_pool(seed: int = 0, workers: int | None = None) -> list[bytes]:
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        return list(pool.map(_pool_image, range(POOL_SIZE), [seed] * POOL_SIZE, chunksize=8))


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, TAR_MTIME, 0o644
    return info


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _split_counts(num_images: int) -> dict[str, int]:
    train = int(num_images * SPLIT_SHARE["train"])
    validation = int(num_images * SPLIT_SHARE["validation"])
    return {"train": train, "validation": validation, "test": num_images - train - validation}


def generate(manual_dir: str, num_images: int, seed: int = 0) -> RealisticInput:
    """Writes the train, validation and (patched) test tars; reuses an identical earlier run."""
    counts = _split_counts(num_images)
    classes = dataset.class_names()
    num_classes = max(1, min(len(classes), round(counts["train"] / IMAGES_PER_CLASS)))
    per_class = [counts["train"] // num_classes] * num_classes
    for i in range(counts["train"] - sum(per_class)):
        per_class[i] += 1
    wanted = {"num_images": num_images, "seed": seed, "pool": POOL_SIZE, "noise": NOISE_SIGMA}
    return _write(manual_dir, wanted, per_class, counts, lambda: image_pool(seed))


# The full count: ILSVRC 2012's member counts in its archives' shapes, with tiny images, so
# that what is measured is the per-image cost (≈2.1 GB: a 512-byte tar header and under
# 1 KiB of JPEG a member). Train classes hold 732–1,300 images, most of them 1,300.
FULL_COUNTS = {"train": 1_281_167, "validation": 50_000, "test": 100_000}
FULL_MIN_PER_CLASS = 732


def full_count_per_class(seed: int = 0) -> list[int]:
    """1,000 class sizes summing to 1,281,167: 1,300 each, less a deficit spread over some
    classes at random (fixed by the seed), none under 732."""
    rng = np.random.default_rng([seed, 1300])
    per_class = [1300] * 1000
    deficit = 1300 * 1000 - FULL_COUNTS["train"]
    while deficit:
        i = int(rng.integers(0, 1000))
        take = min(deficit, int(rng.integers(1, 400)), per_class[i] - FULL_MIN_PER_CLASS)
        per_class[i] -= take
        deficit -= take
    return per_class


def _tiny_image(index: int, seed: int) -> bytes:
    rng = np.random.default_rng([seed, index, 1])
    width, height = int(rng.integers(28, 44)), int(rng.integers(22, 36))
    img = rng.uniform(40, 215, 3) + rng.normal(0, 12, (height, width, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=75)
    return out.getvalue()


def generate_full_count(manual_dir: str, seed: int = 0) -> RealisticInput:
    """ImageNet's 1,431,167 members (1,000 class tars in the train tar, 50,000 validation,
    100,000 test images) as tiny JPEGs; reuses an identical earlier run."""
    wanted = {"full_count": True, "seed": seed, "pool": POOL_SIZE}
    return _write(
        manual_dir, wanted, full_count_per_class(seed), dict(FULL_COUNTS),
        lambda: [_tiny_image(i, seed) for i in range(POOL_SIZE)],
    )


def _write(
    manual_dir: str, wanted: dict, per_class: list[int], counts: dict[str, int],
    make_pool,
) -> RealisticInput:
    marker = os.path.join(manual_dir, "realistic_input.json")
    if os.path.exists(marker):
        with open(marker) as f:
            done = json.load(f)
        if done["wanted"] == wanted:
            return RealisticInput(manual_dir, **done["facts"])
    os.makedirs(manual_dir, exist_ok=True)
    pool = make_pool()
    sizes = [Image.open(io.BytesIO(p)).size for p in pool]
    uses = [0] * POOL_SIZE
    step = [0]

    def next_image() -> bytes:
        index = (step[0] * 7919) % POOL_SIZE  # a fixed stride through the pool
        step[0] += 1
        uses[index] += 1
        return pool[index]

    classes = dataset.class_names()
    with tarfile.open(os.path.join(manual_dir, dataset.TRAIN_ARCHIVE), "w") as outer:
        for wnid, count in zip(classes[: len(per_class)], per_class, strict=True):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for n in range(count):
                    _add(tar, f"{wnid}_{n + 1}.JPEG", next_image())
            _add(outer, f"{wnid}.tar", inner.getvalue())
    with tarfile.open(os.path.join(manual_dir, dataset.VALIDATION_ARCHIVE), "w") as tar:
        for n in range(counts["validation"]):
            _add(tar, f"ILSVRC2012_val_{n + 1:08d}.JPEG", next_image())
    for archive in (dataset.TEST_ARCHIVE_2012,):
        with tarfile.open(os.path.join(manual_dir, archive), "w") as tar:
            for n in range(counts["test"]):
                _add(tar, f"ILSVRC2012_test_{n + 1:08d}.JPEG", next_image())

    used = sum(uses)
    facts = {
        "counts": counts,
        "total_bytes": sum(len(pool[i]) * k for i, k in enumerate(uses)),
        "mean_width": float(sum(sizes[i][0] * k for i, k in enumerate(uses)) / used),
        "mean_height": float(sum(sizes[i][1] * k for i, k in enumerate(uses)) / used),
    }
    with open(marker, "w") as f:
        json.dump({"wanted": wanted, "facts": facts}, f)
    return RealisticInput(manual_dir, **facts)


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
    with tar.extractfile(member) as src, open(path, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.utime(path, (member.mtime, member.mtime))


def extract_imagefolder(manual_dir: str, target: str) -> str:
    """The tarballs' images as an extracted ImageFolder tree (train/<wnid>/, val/ flat,
    test/ flat: the test tar a conversion of the tarballs reads), written from the tars
    as a stream; an earlier extraction of the same tars is reused. Returns `target`."""
    test_archive = next(
        name for name in (dataset.TEST_ARCHIVE_PATCHED, dataset.TEST_ARCHIVE_2012)
        if os.path.exists(os.path.join(manual_dir, name))
    )
    archives = (dataset.TRAIN_ARCHIVE, dataset.VALIDATION_ARCHIVE, test_archive)
    wanted = {}
    for name in archives:
        st = os.stat(os.path.join(manual_dir, name))
        wanted[name] = [st.st_size, st.st_mtime_ns]
    marker = os.path.join(target, "extracted_from.json")
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == wanted:
                return target
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    train = os.path.join(target, "train")
    os.makedirs(train)
    with tarfile.open(os.path.join(manual_dir, dataset.TRAIN_ARCHIVE), "r|") as outer:
        for class_tar in outer:
            wnid = class_tar.name[: -len(".tar")]
            os.makedirs(os.path.join(train, wnid))
            with tarfile.open(fileobj=outer.extractfile(class_tar), mode="r|") as inner:
                for member in inner:
                    _write_member(inner, member, os.path.join(train, wnid, member.name))
    for archive, folder in ((dataset.VALIDATION_ARCHIVE, "val"), (test_archive, "test")):
        os.makedirs(os.path.join(target, folder))
        with tarfile.open(os.path.join(manual_dir, archive), "r|") as tar:
            for member in tar:
                _write_member(tar, member, os.path.join(target, folder, member.name))
    with open(marker, "w") as f:
        json.dump(wanted, f)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manual_dir", required=True)
    parser.add_argument("--num_images", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--full_count", action="store_true",
        help="ImageNet's 1,431,167 members in its archives' shapes, as tiny JPEGs.",
    )
    args = parser.parse_args(argv)
    if args.full_count:
        made = generate_full_count(args.manual_dir, args.seed)
    else:
        made = generate(args.manual_dir, args.num_images, args.seed)
    print(f"{made.describe()} {made.counts} in {made.manual_dir}")


if __name__ == "__main__":
    main()
