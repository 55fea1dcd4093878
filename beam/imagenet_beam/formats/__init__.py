"""Shard file formats, one class each, found through one table.

A format writes one shard from serialized examples (returning count, bytes and sha256),
counts the records of a shard, and reads a split's first example back through TFDS.
Nothing outside this package asks which format a run uses: it asks the table.
"""

from __future__ import annotations

from imagenet_beam import settings
from imagenet_beam.formats.array_record import ArrayRecordFormat
from imagenet_beam.formats.base import ShardFormat, WriteResult
from imagenet_beam.formats.tfrecord import TFRecordFormat

FORMATS: dict[str, ShardFormat] = {f.name: f for f in (TFRecordFormat(), ArrayRecordFormat())}
assert tuple(FORMATS) == settings.FILE_FORMATS, "settings.FILE_FORMATS and FORMATS disagree"


def get(name: str) -> ShardFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise settings.SettingsError(
            f"--file_format={name}: choose one of {', '.join(FORMATS)}"
        ) from None


__all__ = ["FORMATS", "ShardFormat", "WriteResult", "get"]
