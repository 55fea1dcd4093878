"""The files TFDS's sibling datasets need beside the archives, for a generated image set.

SimCLR's subset lists (`1percent.txt`, `10percent.txt`: one train file name a line) and
ReaL's `real.json` (per validation image, in file-number order, its list of labels in
sorted-class order; some lists empty, some with more than one label), in the shapes of
the real files, so `--dataset=imagenet2012_subset/…` and `imagenet2012_real` run on a
generated manual dir.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from imagenet_beam import dataset
from imagenet_beam.formats.schemas import REAL_LABELS, SUBSET_LISTS
from imagenet_beam.synthetic import GeneratedInput


@dataclasses.dataclass
class GeneratedSiblings:
    subsets: dict[str, list[str]]  # config (1pct, 10pct) → the train file names listed
    real: list[list[int]]  # per validation file number (1-based, index + 1) its labels


def _write(path: str, text: str) -> None:
    tmp = path + ".partial"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_sibling_files(directory: str, generated: GeneratedInput, *, seed: int = 0) -> (
    GeneratedSiblings
):
    """Writes 1percent.txt, 10percent.txt and real.json for `generated` into `directory`.

    The lists hold at least one image of every class, like SimCLR's (which are class
    balanced), in a shuffled order, and name one image the input does not have (SimCLR's
    lists are of the full train set). real.json: the true label mostly, sometimes also a
    second one, sometimes none; it has an entry for every number up to the largest
    validation image, as the real one has 50,000.
    """
    rng = np.random.default_rng(seed)
    train = sorted(m.file_name for m in generated.members if m.split == dataset.TRAIN)
    by_class: dict[str, list[str]] = {}
    for name in train:
        by_class.setdefault(name.split("_")[0], []).append(name)
    subsets = {}
    for config, share in (("1pct", 0.2), ("10pct", 0.5)):
        chosen = [
            name for names in by_class.values()
            for name in list(rng.permutation(names))[: max(1, round(len(names) * share))]
        ]
        rng.shuffle(chosen)
        subsets[config] = [str(n) for n in chosen]
        lines = [*subsets[config], "n99999999_1.JPEG"]  # not in this input
        _write(os.path.join(directory, SUBSET_LISTS[config]), "\n".join(lines) + "\n")
    labels = {
        int(dataset.VALIDATION_NAME.fullmatch(m.file_name).group(1)): m.label
        for m in generated.members if m.split == dataset.VALIDATION
    }
    real: list[list[int]] = []
    for number in range(1, max(labels, default=0) + 1):
        label = labels.get(number, 0)
        draw = rng.random()
        if draw < 0.15:
            real.append([])
        elif draw < 0.35:
            real.append(sorted({label, int(rng.integers(dataset.NUM_CLASSES))}))
        else:
            real.append([label])
    _write(os.path.join(directory, REAL_LABELS), json.dumps(real))
    return GeneratedSiblings(subsets, real)
