"""Which example goes into which shard, decided the way TFDS decides it.

Every example's key is the md5 of its file name salted with the split name; examples are
written in ascending key order and the sorted list is cut into shards with TFDS's
boundaries. So the output does not depend on archive order, runner or worker count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from imagenet_beam.sources import MemberRef

if TYPE_CHECKING:
    from imagenet_beam.member_table import MemberTable

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


def key_digest(split: str, file_name: str) -> bytes:
    """TFDS's ordering key as 16 bytes: md5 over the split name then the key. Compared as
    bytes, they sort as TFDS's integer keys do."""
    digest = hashlib.md5(split.encode("utf-8"))
    digest.update(file_name.replace("\\", "/").encode("utf-8"))
    return digest.digest()


def example_key(split: str, file_name: str) -> int:
    """TFDS's ordering key as the 128-bit integer TFDS compares."""
    return int.from_bytes(key_digest(split, file_name), "big")


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


def plan_members(
    members: MemberTable, num_shards: int | None = None
) -> list[tuple[int, int, MemberTable]]:
    """Cut one split's members (`member_table.MemberTable`) sorted by key into shards:
    (index, number of shards, the shard's members) each."""
    split = members.split
    members = members.sorted_by_key()
    duplicates = members.repeated_names()
    if duplicates:
        raise PlanError(
            f"split {split!r} has {len(duplicates)} members with the same file name "
            f"(e.g. {duplicates[0]!r}); each image must appear once in its archive"
        )
    if not len(members):
        raise PlanError(f"split {split!r} has no images: its archive holds no image members")
    if num_shards is None:
        num_shards = tfds_shard_count(members.estimated_bytes(), len(members))
    if num_shards < 1:
        raise PlanError(f"--num_shards={num_shards}: give a positive number of shards")
    if num_shards > len(members):
        raise PlanError(
            f"--num_shards={num_shards} is more than the {len(members)} images of split "
            f"{split!r}; ask for at most {len(members)} shards"
        )
    cut, start = [], 0
    for index, end in enumerate(shard_boundaries(len(members), num_shards)):
        cut.append((index, num_shards, members.slice(start, end)))
        start = end
    return cut


def plan_split(
    split: str, members: Iterable[MemberRef], num_shards: int | None = None
) -> list[ShardSpec]:
    """Cut one split's members, sorted by key, into shards (`plan_members`)."""
    from imagenet_beam.member_table import MemberTable

    table = MemberTable.from_refs(split, members)
    return [
        ShardSpec(split, index, count, tuple(part.to_refs()))
        for index, count, part in plan_members(table, num_shards)
    ]
