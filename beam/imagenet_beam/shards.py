"""Writing one shard: read its members by offset, fix images, encode, write, checksum."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Iterator

from imagenet_beam import archives, examples, images, storage
from imagenet_beam.plan import ShardSpec, shard_file_name

TFRECORD = "tfrecord"
ARRAY_RECORD = "array_record"
FILE_FORMATS = (TFRECORD, ARRAY_RECORD)
ARRAY_RECORD_OPTIONS = "group_size:1,uncompressed"

ON_CORRUPT_FAIL = "fail"
ON_CORRUPT_SKIP = "skip"
ON_CORRUPT_POLICIES = (ON_CORRUPT_FAIL, ON_CORRUPT_SKIP)

ERROR_PREFIX = "imagenet_beam error: "


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


class CorruptMemberError(ValueError):
    """A member that is not a usable image, under --on_corrupt=fail."""


@dataclasses.dataclass(frozen=True)
class WriteSettings:
    output_dir: str
    file_format: str = TFRECORD
    on_corrupt: str = ON_CORRUPT_FAIL
    validate: bool = False
    resize: str | None = None  # images.Resize.parse syntax: shorter:N or max:N
    max_pixels: int = images.DEFAULT_MAX_PIXELS


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

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ShardResult:
        return cls(**json.loads(text))


def _member_note(ref: archives.MemberRef, what: str) -> dict:
    return {"archive": storage.basename(ref.archive), "file_name": ref.file_name, "reason": what}


@dataclasses.dataclass
class MemberNotes:
    """The members of a shard that were fixed or skipped, filled in while encoding."""

    fixed: list[dict] = dataclasses.field(default_factory=list)
    skipped: list[dict] = dataclasses.field(default_factory=list)


def encode_shard(
    spec: ShardSpec, settings: WriteSettings, notes: MemberNotes
) -> Iterator[tuple[bytes, bytes, bytes]]:
    """The shard's serialized examples in key order, one at a time, each in the three
    pieces of `examples.example_parts`.

    Members are read in offset order first (sequential reads), then encoded in key order;
    each member's bytes are dropped as its record is yielded, so a shard is held in memory
    about once, not twice.
    """
    by_archive: dict[str, list[archives.MemberRef]] = {}
    for ref in spec.members:
        by_archive.setdefault(ref.archive, []).append(ref)
    contents: dict[tuple[str, int], bytes] = {}
    for archive, refs in by_archive.items():
        for ref, data in archives.read_members(archive, refs):
            contents[(ref.archive, ref.offset)] = data

    resize = images.Resize.parse(settings.resize)
    for ref in spec.members:
        data = contents.pop((ref.archive, ref.offset))
        try:
            prepared = images.prepare_image(
                data,
                validate=settings.validate,
                max_pixels=settings.max_pixels,
                resize=resize,
            )
        except images.CorruptImageError as e:
            if settings.on_corrupt == ON_CORRUPT_SKIP:
                notes.skipped.append(_member_note(ref, str(e)))
                continue
            raise CorruptMemberError(
                f"{ERROR_PREFIX}{ref.split} image {ref.file_name!r} in {ref.archive} "
                f"{e}. Replace the archive with an intact download, or run with "
                "--on_corrupt=skip to leave such images out (they are listed in lineage.json)."
            ) from None
        if prepared.fix:
            notes.fixed.append(_member_note(ref, prepared.fix))
        yield examples.example_parts(prepared.data, ref.label, ref.file_name)


def _write_tfrecord(
    path: str, records: Iterable[tuple[bytes, ...]]
) -> tuple[int, int, str]:
    """(records, bytes, sha256) of the TFRecord file written."""
    digest, size, count = hashlib.sha256(), 0, 0
    with storage.open_write(path) as f:
        for parts in records:
            for piece in examples.tfrecord_frame_parts(parts):
                digest.update(piece)
                size += len(piece)
                f.write(piece)
            count += 1
    return count, size, digest.hexdigest()


def _write_array_record_local(path: str, records: Iterable[tuple[bytes, ...]]) -> int:
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(path, ARRAY_RECORD_OPTIONS)
    count = 0
    try:
        for parts in records:
            writer.write(b"".join(parts))
            count += 1
    finally:
        writer.close()
    return count


def _local_sha256(path: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            digest.update(chunk)
    return os.path.getsize(path), digest.hexdigest()


def _write_array_record(
    path: str, records: Iterable[tuple[bytes, ...]]
) -> tuple[int, int, str]:
    """ArrayRecord writes only local files: write one, then upload it when remote."""
    if not storage.is_remote(path):
        count = _write_array_record_local(path, records)
        return (count, *_local_sha256(path))
    with storage.scratch_dir() as scratch:
        local = os.path.join(scratch, storage.basename(path))
        count = _write_array_record_local(local, records)
        result = (count, *_local_sha256(local))
        storage.upload_file(local, path)
        return result


def write_shard(spec: ShardSpec, settings: WriteSettings) -> ShardResult:
    notes = MemberNotes()
    name = shard_file_name(spec.split, settings.file_format, spec.index, spec.num_shards)
    path = storage.join(settings.output_dir, name)
    writer = _write_tfrecord if settings.file_format == TFRECORD else _write_array_record
    count, num_bytes, sha256 = writer(path, encode_shard(spec, settings, notes))
    return ShardResult(
        spec.split, spec.index, spec.num_shards, name, count, num_bytes, sha256,
        notes.fixed, notes.skipped,
    )


def iter_results(results_dir: str) -> Iterator[ShardResult]:
    for path in storage.list_files(results_dir):
        if path.endswith(".json"):
            yield ShardResult.from_json(storage.read_bytes(path).decode("utf-8"))
