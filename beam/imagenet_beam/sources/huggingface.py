"""Hugging Face's `ILSVRC/imagenet-1k` archives.

    MANUAL_DIR/train_images_{0..4}.tar.gz   (or MANUAL_DIR/data/…, as the dataset repo has them)
    MANUAL_DIR/val_images.tar.gz
    MANUAL_DIR/test_images.tar.gz

Members are flat and named `<original stem>_<wnid>.JPEG` (`n01440764_10026_n01440764.JPEG`,
`ILSVRC2012_val_00000001_n01751748.JPEG`); test members keep their own name. Each image is
stored under the name the tarballs give it (the stem before the last `_`), labelled by the
wnid suffix for train and by TFDS's validation labels for validation, whose suffix must
agree. The archives are gzip streams: they are unpacked once (see `packed`).
"""

from __future__ import annotations

import posixpath

from imagenet_beam import dataset, storage
from imagenet_beam.sources.base import SplitInput
from imagenet_beam.sources.packed import Image, PackedSource, Stray, is_wnid, stray_name
from imagenet_beam.sources.tar import ArchiveError

DATA_DIR = "data"
ARCHIVES = {
    dataset.TRAIN: tuple(f"train_images_{i}.tar.gz" for i in range(5)),
    dataset.VALIDATION: ("val_images.tar.gz",),
    dataset.TEST: ("test_images.tar.gz",),
}
SPLIT_OF = {name: split for split, names in ARCHIVES.items() for name in names}


class HuggingFaceSource(PackedSource):
    name = "huggingface"
    title = "the Hugging Face imagenet-1k archives"
    instructions = (
        "For the Hugging Face copy, point manual_dir at the folder holding "
        "train_images_0.tar.gz … train_images_4.tar.gz, val_images.tar.gz and "
        f"test_images.tar.gz (or at the folder holding their {DATA_DIR}/ folder), as "
        "downloaded from huggingface.co/datasets/ILSVRC/imagenet-1k."
    )

    def configured(self, settings) -> HuggingFaceSource:
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)
        return self.configure_packed(copy, settings)  # type: ignore[return-value]

    def _places(self, manual_dir: str) -> list[str]:
        return [manual_dir, storage.join(manual_dir, DATA_DIR)]

    def present(self, manual_dir: str) -> bool:
        return any(
            storage.exists(storage.join(place, name))
            for place in self._places(manual_dir) for name in SPLIT_OF
        )

    def find(self, manual_dir, splits, test_patch=None, test_archive=None):
        found, missing = {}, []
        for split in splits:
            if split == dataset.TEST and test_archive:
                continue  # a named test tar is the tarballs'
            names = ARCHIVES[split]
            held = {
                place: [n for n in names if storage.exists(storage.join(place, n))]
                for place in self._places(manual_dir)
            }
            places = [p for p, present in held.items() if present]
            if len(places) > 1:
                raise ArchiveError(
                    f"{manual_dir} has the {split} split's archives twice, in {places[0]} and "
                    f"{places[1]}: keep one of them"
                )
            if not places:
                missing.append(f"{split}: {' '.join(names)}")
                continue
            place = places[0]
            absent = [n for n in names if n not in held[place]]
            if absent:
                missing.append(f"{split}: {', '.join(absent)} (in {place})")
                continue
            files = tuple(storage.join(place, n) for n in names)
            found[split] = SplitInput(split, place, layout=self.name, files=files)
        return found, missing

    def packed_archives(self, split_input: SplitInput) -> list[str]:
        return list(split_input.files or ())

    def archives_of(self, split: str, path: str) -> list[str]:
        return [storage.join(path, name) for name in ARCHIVES[split]]

    def classify(self, archive: str, name: str) -> Image | Stray | None:
        split = SPLIT_OF.get(storage.basename(archive))
        if split is None:
            return None
        stray = stray_name(name)
        if stray is not None:
            return Stray(split, f"{storage.basename(archive)}:{stray}")
        base = posixpath.basename(name)
        if split == dataset.TEST:
            return Image(split, base, None)
        stem, ext = posixpath.splitext(base)
        original, sep, wnid = stem.rpartition("_")
        if not sep or not original or not is_wnid(wnid):
            raise ArchiveError(
                f"{archive}: member {name} does not end in _<wnid> of an ILSVRC 2012 class "
                f"({wnid!r} is none of the 1000 wnids): is this Hugging Face's imagenet-1k "
                "archive? Download it again"
            )
        return Image(split, original + ext, wnid)

    def where_packed_label(self, archive: str, file_name: str, wnid: str) -> str:
        stem, ext = posixpath.splitext(file_name)
        return f"{archive} (its member {stem}_{wnid}{ext})"
