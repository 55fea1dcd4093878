"""What the report shows of a split without reading its images again, counted while writing.

Per shard: examples per class, and the stored images' file sizes and dimensions on fixed
logarithmic bins, so that shards add up to a split by plain addition. A few hundred
numbers a split, kept in lineage.json. Standard library only (it runs in every writer).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

BINS_PER_OCTAVE = 8  # bin b holds values in [2**(b/8), 2**((b+1)/8))


def log_bin(value: int) -> int:
    return math.floor(math.log2(max(value, 1)) * BINS_PER_OCTAVE)


def bin_edges(b: int) -> tuple[float, float]:
    return 2 ** (b / BINS_PER_OCTAVE), 2 ** ((b + 1) / BINS_PER_OCTAVE)


@dataclasses.dataclass
class ImageStats:
    """labels: class id → examples; file_bytes: bin → images; image_sizes: (width bin,
    height bin) → images."""

    labels: Counter = dataclasses.field(default_factory=Counter)
    file_bytes: Counter = dataclasses.field(default_factory=Counter)
    image_sizes: Counter = dataclasses.field(default_factory=Counter)

    def add(self, label: int, num_bytes: int, size: tuple[int, int] | None) -> None:
        self.labels[label] += 1
        self.file_bytes[log_bin(num_bytes)] += 1
        if size is not None:
            self.image_sizes[(log_bin(size[0]), log_bin(size[1]))] += 1

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {
            "labels": {str(k): v for k, v in sorted(self.labels.items())},
            "file_bytes": {str(k): v for k, v in sorted(self.file_bytes.items())},
            "image_sizes": {f"{w},{h}": v for (w, h), v in sorted(self.image_sizes.items())},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Mapping[str, int]] | None) -> ImageStats:
        d = d or {}
        return cls(
            Counter({int(k): v for k, v in d.get("labels", {}).items()}),
            Counter({int(k): v for k, v in d.get("file_bytes", {}).items()}),
            Counter(
                {tuple(int(x) for x in k.split(",")): v
                 for k, v in d.get("image_sizes", {}).items()}
            ),
        )

    @classmethod
    def total(cls, parts: Iterable[Mapping[str, Any] | None]) -> ImageStats:
        out = cls()
        for part in parts:
            one = cls.from_dict(part)
            out.labels.update(one.labels)
            out.file_bytes.update(one.file_bytes)
            out.image_sizes.update(one.image_sizes)
        return out
