"""NVIDIA DALI's index of a TFRecord shard: `<shard>.idx` beside it (`--tfrecord_index`).

DALI's TFRecord reader (`fn.readers.tfrecord(path=..., index_path=...)`) needs one per shard;
its `tfrecord2idx` script makes it by reading the whole shard again. Ours costs no read: the
writer knows where every record starts (`WriteResult.offsets`). Each line is one record,
`offset size`, in record order, where size is the whole framed record (length, its CRC, the
data, the data's CRC), as tfrecord2idx writes it: the next record's offset less this one's.
"""

from __future__ import annotations

from collections.abc import Sequence

from imagenet_beam.formats.tfrecord import ShardFormatError

FRAMING = 16  # bytes of a record that are not its data: the size of an empty record


def index_text(offsets: Sequence[int], num_bytes: int) -> bytes:
    """The index of a shard of `num_bytes` whose records start at `offsets`."""
    ends = (*offsets[1:], num_bytes) if offsets else ()
    lines = (f"{start} {end - start}\n" for start, end in zip(offsets, ends, strict=True))
    return "".join(lines).encode()


def read_index(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every line, or a ShardFormatError naming the first bad line."""
    spans = []
    for number, line in enumerate(data.decode("ascii", "replace").splitlines(), 1):
        fields = line.split()
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise ShardFormatError(f"line {number} is {line[:40]!r}, not 'offset size'")
        spans.append((int(fields[0]), int(fields[1])))
    return spans


def index_problems(data: bytes, num_records: int, num_bytes: int) -> list[str]:
    """What is wrong with an index for a shard of `num_records` records in `num_bytes`,
    from the index alone: one line per record, each record starting where the one before
    ends, the first at 0 and the last ending at the shard's end."""
    try:
        spans = read_index(data)
    except ShardFormatError as e:
        return [str(e)]
    if len(spans) != num_records:
        return [f"{len(spans)} lines for {num_records} records"]
    position = 0
    for number, (offset, size) in enumerate(spans, 1):
        if offset != position:
            where = f"line {number - 1} ends at {position}" if number > 1 else "not at 0"
            return [f"line {number} starts a record at {offset}, {where}"]
        if size < FRAMING:
            return [f"line {number} gives a record of {size} bytes, less than its framing"]
        position += size
    if position != num_bytes:
        return [f"its records end at byte {position}, the shard at {num_bytes}"]
    return []
