"""Which example goes into which shard, decided the way TFDS decides it.

Every example's key is the md5 of its file name salted with the split name; examples are
written in ascending key order and the sorted list is cut into shards with TFDS's
boundaries. So the output does not depend on archive order, runner or worker count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from operator import itemgetter
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


def key_text(split: str, file_name: str) -> str:
    """TFDS's ordering key as 32 hex digits: md5 over the split name then the key. Of
    fixed width, so the texts sort as the keys do."""
    digest = hashlib.md5(split.encode("utf-8"))
    digest.update(file_name.replace("\\", "/").encode("utf-8"))
    return digest.hexdigest()


def example_key(split: str, file_name: str) -> int:
    """TFDS's ordering key as the 128-bit integer TFDS compares."""
    return int(key_text(split, file_name), 16)


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


# A member as the pipeline's index and plan files carry it: a JSON list, with its key
# (`key_text`) first and, once planned, the number of its archive in the plan's table.
KEY, OFFSET, SIZE, FILE_NAME, LABEL, EXTRA, ARCHIVE = range(7)


def member_row(split: str, ref: MemberRef, archive: int | None = None) -> list:
    """ref as a row keyed for split; archive: its number in the plan's table, once planned."""
    row = [key_text(split, ref.file_name), ref.offset, ref.size, ref.file_name, ref.label,
           ref.extra]
    return row if archive is None else [*row, archive]


def row_member(split: str, archives: Sequence[str], row: Sequence) -> MemberRef:
    """A planned row's MemberRef; archives: the plan's table of archive paths."""
    return MemberRef(split, archives[row[ARCHIVE]], *row[OFFSET:ARCHIVE])


def estimated_bytes(rows: Sequence[Sequence]) -> int:
    """What TFDS's shard count rule is given for these members: each one's image, its file
    name in UTF-8, and the proto framing around them."""
    names = map(str.encode, map(itemgetter(FILE_NAME), rows))
    return (
        sum(map(itemgetter(SIZE), rows)) + sum(map(len, names))
        + EXAMPLE_OVERHEAD_BYTES * len(rows)
    )


def plan_rows(
    split: str, rows: list[list], num_shards: int | None = None
) -> list[tuple[int, int, list[list]]]:
    """Cut one split's member rows (`member_row`), sorted by key, into shards: (index,
    number of shards, the shard's rows) each. Sorts `rows` in place.

    The pipeline plans a split's every member at once (1.28 M for train), so this works on
    the rows as the index files give them, not on a MemberRef each."""
    rows.sort(key=itemgetter(KEY))
    if len(set(map(itemgetter(KEY), rows))) < len(rows):
        duplicates = sorted(
            {b[FILE_NAME] for a, b in zip(rows, rows[1:], strict=False) if a[KEY] == b[KEY]}
        )
        raise PlanError(
            f"split {split!r} has {len(duplicates)} members with the same file name "
            f"(e.g. {duplicates[0]!r}); each image must appear once in its archive"
        )
    if not rows:
        raise PlanError(f"split {split!r} has no images: its archive holds no image members")
    if num_shards is None:
        num_shards = tfds_shard_count(estimated_bytes(rows), len(rows))
    if num_shards < 1:
        raise PlanError(f"--num_shards={num_shards}: give a positive number of shards")
    if num_shards > len(rows):
        raise PlanError(
            f"--num_shards={num_shards} is more than the {len(rows)} images of split "
            f"{split!r}; ask for at most {len(rows)} shards"
        )
    cut, start = [], 0
    for index, end in enumerate(shard_boundaries(len(rows), num_shards)):
        cut.append((index, num_shards, rows[start:end]))
        start = end
    return cut


def plan_split(
    split: str, members: Iterable[MemberRef], num_shards: int | None = None
) -> list[ShardSpec]:
    """Cut one split's members, sorted by key, into shards (`plan_rows`)."""
    members = list(members)
    archives = sorted({m.archive for m in members})
    number = {archive: i for i, archive in enumerate(archives)}
    rows = [member_row(split, m, number[m.archive]) for m in members]
    return [
        ShardSpec(split, index, count, tuple(row_member(split, archives, r) for r in part))
        for index, count, part in plan_rows(split, rows, num_shards)
    ]
