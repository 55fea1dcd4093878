"""Which example goes into which shard, decided the way TFDS decides it.

Every example's key is the md5 of its file name salted with the split name; examples are
written in ascending key order and the sorted list is cut into shards with TFDS's
boundaries. So the output does not depend on archive order, runner or worker count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import NamedTuple

from imagenet_beam.sources import MemberRef

MIN_SHARD_BYTES = 64 << 20
MAX_SHARD_BYTES = 1024 << 20
RECORD_OVERHEAD_BYTES = 16  # TFRecord framing per record, as TFDS counts it
EXAMPLE_OVERHEAD_BYTES = 48  # proto framing and the label around image and file name
_PREFERRED_SHARD_COUNTS = (512, 256, 128, 64, 32, 16, 8, 4, 2)


class ShardSpec(NamedTuple):
    split: str
    index: int
    num_shards: int
    members: tuple[MemberRef, ...]  # in key order: the order they are written


class PlanError(ValueError):
    pass


def example_key(split: str, file_name: str) -> int:
    """TFDS's ordering key: md5 over the split name then the key, as a 128-bit integer."""
    digest = hashlib.md5(split.encode("utf-8"))
    digest.update(file_name.replace("\\", "/").encode("utf-8"))
    return int(digest.hexdigest(), 16)


def tfds_shard_count(total_bytes: int, num_examples: int) -> int:
    """TFDS's rule: 1024 shards when they fit 64 MiB–1 GiB each, else the nearest power of two."""
    total_bytes += num_examples * RECORD_OVERHEAD_BYTES
    most = total_bytes // MIN_SHARD_BYTES
    least = total_bytes // MAX_SHARD_BYTES
    if least <= 1024 <= most and num_examples >= 1024:
        return 1024
    if least > 1024:
        count = 2048
        while count < least:
            count += 1024
        if num_examples < count:
            raise PlanError(
                f"{num_examples} examples of {total_bytes:,} bytes do not fit TFDS's shard "
                "sizes; give --num_shards"
            )
        return count
    for count in _PREFERRED_SHARD_COUNTS:
        if least <= count <= most and num_examples >= count:
            return count
    return 1


def shard_boundaries(num_examples: int, num_shards: int) -> list[int]:
    return [round(num_examples * i / num_shards) for i in range(1, num_shards + 1)]


def estimated_example_bytes(member: MemberRef) -> int:
    return member.size + len(member.file_name.encode("utf-8")) + EXAMPLE_OVERHEAD_BYTES


def plan_split(
    split: str, members: Iterable[MemberRef], num_shards: int | None = None
) -> list[ShardSpec]:
    """Cut one split's members, sorted by key, into shards."""
    keyed = sorted((example_key(split, m.file_name), m) for m in members)
    duplicates = sorted(
        {b.file_name for (ka, _), (kb, b) in zip(keyed, keyed[1:], strict=False) if ka == kb}
    )
    if duplicates:
        raise PlanError(
            f"split {split!r} has {len(duplicates)} members with the same file name "
            f"(e.g. {duplicates[0]!r}); each image must appear once in its archive"
        )
    ordered = tuple(m for _, m in keyed)
    if not ordered:
        raise PlanError(f"split {split!r} has no images: its archive holds no image members")
    if num_shards is None:
        total = sum(estimated_example_bytes(m) for m in ordered)
        num_shards = tfds_shard_count(total, len(ordered))
    if num_shards < 1:
        raise PlanError(f"--num_shards={num_shards}: give a positive number of shards")
    if num_shards > len(ordered):
        raise PlanError(
            f"--num_shards={num_shards} is more than the {len(ordered)} images of split "
            f"{split!r}; ask for at most {len(ordered)} shards"
        )
    specs, start = [], 0
    for index, end in enumerate(shard_boundaries(len(ordered), num_shards)):
        specs.append(ShardSpec(split, index, num_shards, ordered[start:end]))
        start = end
    return specs
