"""Example schemas: what each output's records hold, one class each, found through one table.

A schema knows its output (`layout.Output`: name, version, file names), which members of a
split it keeps and what it attaches to them at index time (a subset's file list, ReaL
labels, boxes), how it encodes one example, how many shards a split gets by default,
whether TFDS's metadata goes beside the shards, and how to read an example's image, name
and label back. (`base.Schema` is the interface.)

    imagenet2012             TFDS's imagenet2012: image, label, file_name
    imagenet2012_subset/*    the same features; train limited to SimCLR's 1% or 10% list
    imagenet2012_real        validation: image, original_label, real_label (ReaL), file_name
    classic                  the classic TF/TPU converters' features (`classic_schema`)

Every record is encoded by hand in a fixed feature order (see `tfds_schema`), so re-runs
give the same bytes under any protobuf runtime.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from imagenet_beam import dataset, layout, storage
from imagenet_beam.errors import DataError
from imagenet_beam.formats import tfds_schema
from imagenet_beam.formats.base import Schema
from imagenet_beam.formats.classic_schema import ClassicSchema

# What a SimCLR subset list and the ReaL labels are called in manual_dir (their names in
# the repositories they come from).
SUBSET_LISTS = {"1pct": "1percent.txt", "10pct": "10percent.txt"}
SUBSET_URL = "https://github.com/google-research/simclr/tree/master/imagenet_subsets"
REAL_LABELS = "real.json"
REAL_URL = "https://github.com/google-research/reassessed-imagenet (real.json)"


class SchemaError(DataError):
    """A file the schema needs is missing or is not what it should be."""


class TfdsSchema(Schema):
    """TFDS's imagenet2012 and its subsets: image, label, file_name."""

    def __init__(self, output: layout.Output):
        self.output = output

    def example_parts(self, ref, image):
        return tfds_schema.example_parts(image.data, ref.label, ref.file_name)

    def fields(self, example):
        return (
            example.get(tfds_schema.FEATURE_IMAGE, b""),
            example.get(tfds_schema.FEATURE_FILE_NAME, b"").decode("utf-8", "replace"),
            example.get(tfds_schema.FEATURE_LABEL),
        )


class SubsetSchema(TfdsSchema):
    """imagenet2012_subset/1pct or /10pct: train only the images its list names."""

    def __init__(self, output: layout.Output, keep: frozenset[str] | None = None):
        super().__init__(output)
        self.keep = keep

    @property
    def list_name(self) -> str:
        return SUBSET_LISTS[self.output.config]

    def needed_files(self, splits):
        return {self.list_name: SUBSET_URL} if dataset.TRAIN in splits else {}

    def configured(self, settings):
        if dataset.TRAIN not in settings.splits:
            return self
        return SubsetSchema(self.output, frozenset(read_subset_list(
            settings.manual_dir, self.list_name, self.output.key
        )))

    def select(self, split, refs):
        if split != dataset.TRAIN:
            return refs
        if self.keep is None:
            raise AssertionError("SubsetSchema.select before configured()")
        return [r for r in refs if r.file_name in self.keep]


def _read_text(manual_dir: str, name: str, needed_by: str, where: str) -> str:
    path = storage.join(manual_dir, name)
    if not storage.exists(path):
        raise SchemaError(
            f"{needed_by} needs {name} in the manual directory {manual_dir}, and it is not "
            f"there. It cannot be downloaded from here: get it from {where} and put it "
            "beside the archives."
        )
    try:
        return storage.read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise SchemaError(f"{path} is not a text file: use the one from {where}") from None


def read_subset_list(manual_dir: str, name: str, needed_by: str) -> list[str]:
    """The train file names of a SimCLR subset list (one a line, `n01440764_10026.JPEG`)."""
    lines = [line.strip() for line in _read_text(manual_dir, name, needed_by, SUBSET_URL)
             .splitlines()]
    names = [line for line in lines if line]
    bad = [n for n in names if "/" in n or not n.endswith(".JPEG") or "_" not in n]
    if bad or not names:
        raise SchemaError(
            f"{storage.join(manual_dir, name)} is not a SimCLR subset list (one train file "
            f"name such as n01440764_10026.JPEG a line)"
            + (f": line {lines.index(bad[0]) + 1} is {bad[0]!r}" if bad else ": it is empty")
        )
    return names


class RealSchema(Schema):
    """imagenet2012_real: validation with ReaL's labels (a list per image, maybe empty)."""

    FEATURES = ("image", "original_label", "real_label", "file_name")  # TFDS's dict order

    def __init__(self, output: layout.Output, labels: tuple[tuple[int, ...], ...] | None = None):
        self.output = output
        self.labels = labels

    def needed_files(self, splits):
        return {REAL_LABELS: REAL_URL}

    def configured(self, settings):
        return RealSchema(self.output, read_real_labels(settings.manual_dir, self.output.key))

    def select(self, split, refs):
        if self.labels is None:
            raise AssertionError("RealSchema.select before configured()")
        out = []
        for ref in refs:
            number = int(dataset.VALIDATION_NAME.fullmatch(ref.file_name).group(1))
            if number > len(self.labels):
                raise SchemaError(
                    f"{REAL_LABELS} has labels for {len(self.labels)} validation images, not "
                    f"for {ref.file_name}: use the real.json of the validation tar converted"
                )
            out.append(ref._replace(extra=list(self.labels[number - 1])))
        return out

    def example_parts(self, ref, image):
        name = ref.file_name.encode("utf-8")
        return tfds_schema.pieces(
            [], "image", image.data,
            [
                tfds_schema.int64_entry("original_label", [ref.label]),
                tfds_schema.int64_entry("real_label", list(ref.extra or ())),
                tfds_schema.bytes_entry("file_name", name),
            ],
        )

    def fields(self, example):
        return (
            example.get("image", b""),
            example.get("file_name", b"").decode("utf-8", "replace"),
            example.get("original_label"),
        )


def read_real_labels(manual_dir: str, needed_by: str) -> tuple[tuple[int, ...], ...]:
    """real.json: per validation image, in file order, its ReaL labels (sorted-class ids)."""
    path = storage.join(manual_dir, REAL_LABELS)
    try:
        labels = json.loads(_read_text(manual_dir, REAL_LABELS, needed_by, REAL_URL))
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path} is not JSON ({e}): use ReaL's real.json") from None
    if not isinstance(labels, list) or not all(
        isinstance(row, list)
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < dataset.NUM_CLASSES
                for v in row)
        for row in labels
    ):
        raise SchemaError(
            f"{path} is not ReaL's real.json: it must be a list (one entry per validation "
            f"image, in file order) of lists of class ids 0..{dataset.NUM_CLASSES - 1}"
        )
    return tuple(tuple(row) for row in labels)


def missing_files(schema: Schema, manual_dir: str, splits: Iterable[str]) -> str | None:
    """What the output needs in manual_dir and does not find there, as one message."""
    missing = {
        name: where for name, where in schema.needed_files(splits).items()
        if not storage.exists(storage.join(manual_dir, name))
    }
    if not missing:
        return None
    return f"{schema.output.key} also needs " + "; ".join(
        f"{name} (get it from {where})" for name, where in missing.items()
    ) + (
        f" in {manual_dir}: it cannot be downloaded from here; put it beside the archives."
    )


def files_identity(schema: Schema, manual_dir: str, splits: Iterable[str]) -> dict[str, str]:
    """name → sha256 of the files the output reads from manual_dir beside the images (so a
    changed list or label file makes the output out of date)."""
    splits = list(splits)
    return {
        name: storage.sha256_of(storage.join(manual_dir, name))
        for name in sorted({*schema.needed_files(splits), *schema.optional_files(splits)})
        if storage.exists(storage.join(manual_dir, name))
    }


def for_output(output: layout.Output) -> Schema:
    """The schema of an output (not yet `configured`)."""
    if output.classic_names:
        return ClassicSchema(output)
    if output.name == "imagenet2012_subset":
        return SubsetSchema(output)
    if output.name == "imagenet2012_real":
        return RealSchema(output)
    return TfdsSchema(output)


def for_record(options: Mapping[str, Any]) -> Schema:
    """The schema a version was written in, from its lineage's options."""
    return for_output(layout.output_for(
        options.get("dataset", dataset.DATASET_NAME), options.get("schema", "tfds")
    ))

