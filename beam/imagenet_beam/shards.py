"""Writing one shard: read its members by offset, fix images, encode, write, checksum.

The file format is the `formats` table's business; the input layout's, how members are read.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterator

from imagenet_beam import formats, images, layout, stats, storage
from imagenet_beam.errors import DataError
from imagenet_beam.formats import schemas, tfrecord_index
from imagenet_beam.formats.base import Schema
from imagenet_beam.plan import ShardSpec
from imagenet_beam.settings import ON_CORRUPT_SKIP, Settings
from imagenet_beam.sources import MemberRef, Source

# glibc's mallopt parameters and the values used for them.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_KEEP_FREED_BYTES = 512 << 20
_HEAP_GROWTH_BYTES = 64 << 20
_MMAP_ABOVE_BYTES = 32 << 20  # glibc's largest allowed value on 64-bit


@functools.cache
def keep_freed_memory() -> bool:
    """Lets glibc's malloc keep the memory of one shard's members for the next shard.

    A shard's ~1,000 member buffers (~110 MB) are allocated together and freed together.
    By default glibc hands the freed heap back to the kernel and the next shard faults
    every page in again, zero-filled: two thirds of the cost of reading a member. Kept,
    the peak is the same and reads cost ~0.02 ms a member instead of ~0.06.
    False (and nothing changed) where the C library has no mallopt (not glibc).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, _MMAP_ABOVE_BYTES),
            (_M_TRIM_THRESHOLD, _KEEP_FREED_BYTES),
            (_M_TOP_PAD, _HEAP_GROWTH_BYTES),
        )
    )


class CorruptMemberError(DataError):
    """A member that is not a usable image, under --on_corrupt=fail."""


@dataclasses.dataclass
class ShardResult:
    split: str
    index: int
    num_shards: int
    file: str
    num_examples: int
    num_bytes: int
    sha256: str
    fixed: list[dict]
    skipped: list[dict]
    stats: dict = dataclasses.field(default_factory=dict)  # `stats.ImageStats.to_dict`
    index_file: dict | None = None  # with --tfrecord_index: `write_index`'s record

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ShardResult:
        return cls(**json.loads(text))


def _member_note(ref: MemberRef, what: str, **where: int) -> dict:
    """Which member, why, and where to find it again: its bytes in the archive (offset,
    size) and, when written, its record in the shard (index, and shard_offset where the
    format is read by offset), for the report."""
    return {
        "archive": storage.basename(ref.archive), "file_name": ref.file_name, "reason": what,
        "offset": ref.offset, "size": ref.size, **where,
    }


@dataclasses.dataclass
class MemberNotes:
    """The members of a shard that were fixed or skipped, and what the shard holds
    (`stats.ImageStats`), filled in while encoding."""

    fixed: list[dict] = dataclasses.field(default_factory=list)
    skipped: list[dict] = dataclasses.field(default_factory=list)
    stats: stats.ImageStats = dataclasses.field(default_factory=stats.ImageStats)


def encode_shard(
    spec: ShardSpec, settings: Settings, source: Source, notes: MemberNotes,
    schema: Schema | None = None,
) -> Iterator[tuple[bytes, bytes, bytes]]:
    """The shard's serialized examples in key order, one at a time, each in the three
    pieces of `tfds_schema.pieces`, in the output's schema (default: imagenet2012's).

    Members are read first, as the layout reads them best (an archive's in offset order,
    extracted files in parallel), then encoded in key order;
    each member's bytes are dropped as its record is yielded, so a shard is held in memory
    about once, not twice.
    """
    contents: dict[tuple[str, int], bytes] = {}
    for ref, data in source.read_shard(spec.members):
        contents[(ref.archive, ref.offset)] = data

    resize = images.Resize.parse(settings.resize)
    schema = schema or schemas.for_output(layout.IMAGENET2012)
    written = 0
    for ref in spec.members:
        data = contents.pop((ref.archive, ref.offset))
        try:
            prepared = images.prepare_image(
                data,
                validate=settings.decode_images,
                max_pixels=settings.max_pixels,
                resize=resize,
            )
        except images.CorruptImageError as e:
            if settings.on_corrupt == ON_CORRUPT_SKIP:
                notes.skipped.append(_member_note(ref, str(e)))
                continue
            raise CorruptMemberError(
                f"{ref.split} image {ref.file_name!r} in {source.origin(ref)} "
                f"{e}. Replace the archive with an intact download, or run with "
                "--on_corrupt=skip to leave such images out (they are listed in lineage.json)."
            ) from None
        if prepared.fix:
            notes.fixed.append(_member_note(ref, prepared.fix, index=written))
        notes.stats.add(ref.label, len(prepared.data), prepared.size)
        written += 1
        yield schema.example_parts(ref, prepared)


def write_index(shard_path: str, offsets: tuple[int, ...], num_bytes: int) -> dict:
    """DALI's index beside the shard (`formats.tfrecord_index`), from the offsets the writer
    gave; its name, size and sha256, for lineage."""
    text = tfrecord_index.index_text(offsets, num_bytes)
    storage.write_bytes(layout.index_file_name(shard_path), text)
    return {
        "file": layout.index_file_name(storage.basename(shard_path)),
        "num_bytes": len(text),
        "sha256": hashlib.sha256(text).hexdigest(),
    }


def write_shard(
    spec: ShardSpec, settings: Settings, source: Source, output_dir: str,
    schema: Schema | None = None,
) -> ShardResult:
    notes = MemberNotes()
    schema = schema or schemas.for_output(layout.IMAGENET2012)
    name = schema.output.shard_file_name(
        spec.split, settings.file_format, spec.index, spec.num_shards
    )
    path = storage.join(output_dir, name)
    shard_format = formats.get(settings.file_format)
    index_file = None
    try:
        count, num_bytes, sha256, offsets = shard_format.write(
            path, encode_shard(spec, settings, source, notes, schema)
        )
        if settings.tfrecord_index:
            index_file = write_index(path, offsets, num_bytes)
    except BaseException:
        # A partial shard helps nobody, and on a full disk its space is what the error's
        # record needs. Its index lives and dies with it.
        index = [layout.index_file_name(path)] if settings.tfrecord_index else []
        for partial in (path, *index):
            with contextlib.suppress(OSError):
                storage.delete_files([partial])
        raise
    if offsets is not None:  # the report reads fixed images back by offset
        for note in notes.fixed:
            note["shard_offset"] = offsets[note["index"]]
    return ShardResult(
        spec.split, spec.index, spec.num_shards, name, count, num_bytes, sha256,
        notes.fixed, notes.skipped, notes.stats.to_dict(), index_file,
    )


def iter_results(results_dir: str) -> Iterator[ShardResult]:
    for path in storage.list_files(results_dir):
        if path.endswith(".json"):
            yield ShardResult.from_json(storage.read_bytes(path).decode("utf-8"))
