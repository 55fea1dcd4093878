"""The Beam pipeline: index the archives → plan shards → write shards.

Only file paths pass through the shuffles: each index step writes its member descriptors
to a file in the work directory, the plan step writes each shard's member list to a file,
and the DoFn that writes a shard reads its list and then the image bytes by offset. So what
a runner holds between steps grows with the number of archives and shards, not images, and
memory is bounded by one shard per writer on any runner.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from imagenet_beam import dataset, layout, member_table, plan, shards, storage
from imagenet_beam.formats import schemas
from imagenet_beam.layout import StagingLayout
from imagenet_beam.member_table import MemberTable
from imagenet_beam.settings import Settings, add_arguments
from imagenet_beam.sources import Source
from imagenet_beam.step_errors import RecordedErrors, failed_already

# The Beam Metrics counters' namespace (what Dataflow's job page lists them under):
# images_indexed, images_read, images_written, images_fixed, images_skipped, bytes_written,
# shards_written. Counted per shard as it is written, for every split of the job together.
METRICS_NAMESPACE = "imagenet2012"


class ConvertOptions(PipelineOptions):
    """The conversion's own flags (one per entry of `settings.SETTINGS`); every standard
    Beam option passes through too."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_arguments(parser)


def indexed_file_names(staging: StagingLayout, split: str) -> set[str]:
    """The file names of every member the split's index step wrote (the staged index)."""
    names: set[str] = set()
    for path in storage.list_files(staging.index_dir):
        if storage.basename(path).startswith(f"{split}-"):
            names.update(member_table.read(path).table[member_table.FILE_NAME].to_pylist())
    return names


@contextlib.contextmanager
def _without_cyclic_gc():
    """Python's cycle collector off for a while: a step that makes some 100,000 objects
    at once (a shard's member list, an index), none of them in a cycle, in a worker that
    holds Beam's own ~300,000, would otherwise collect ~200 times a shard (7% of a
    worker's time at full count)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _work_items(split_input: tuple[str, str], source: Source, staging: StagingLayout):
    split, path = split_input
    with RecordedErrors(staging, f"{split}-list", path):
        yield from source.work_items(split, path)


class IndexMembersFn(beam.DoFn):
    """One work item → its member descriptors in a file; yields (split, that file).
    devkit: the ILSVRC devkit (`sources.devkit.Devkit`) when manual_dir has it: every
    validation label must be its ground truth's. schema: the output's
    (`formats.base.Schema`, configured): which members it keeps, what it attaches."""

    def __init__(self, source: Source, staging: StagingLayout, devkit=None, schema=None):
        self._source = source
        self._staging = staging
        self._devkit = devkit
        self._schema = schema
        self.indexed = Metrics.counter(METRICS_NAMESPACE, "images_indexed")

    def process(self, item):
        split, path, detail = item
        if failed_already(self._staging, split):
            return
        ident = hashlib.sha1(json.dumps([path, detail]).encode("utf-8")).hexdigest()[:20]
        index_file = self._staging.index_file(split, ident)
        with (
            RecordedErrors(self._staging, f"{split}-index-{ident}", path, labels=True) as guard,
            _without_cyclic_gc(),
        ):
            refs = self._source.index(item)
            if self._devkit is not None and split == dataset.VALIDATION:
                for ref in refs:
                    self._devkit.check_validation_label(ref.file_name, ref.label)
            if self._schema is not None:
                refs = self._schema.select(split, refs)
            if refs:
                member_table.write(index_file, MemberTable.from_refs(split, refs))
        if guard.failed:
            return
        self.indexed.inc(len(refs))
        if refs:
            yield split, index_file


class IndexArchives(beam.PTransform):
    """Header-only walk of the inputs → (split, index file) per work item."""

    def __init__(
        self, source: Source, inputs: list[tuple[str, str]], staging: StagingLayout,
        devkit=None, schema=None,
    ):
        super().__init__()
        self._source = source
        self._inputs = inputs
        self._staging = staging
        self._devkit = devkit
        self._schema = schema

    def expand(self, pbegin):
        return (
            pbegin
            | "ListArchives" >> beam.Create(self._inputs)
            | "ListWorkItems" >> beam.FlatMap(_work_items, self._source, self._staging)
            | "SpreadWorkItems" >> beam.Reshuffle()
            | "IndexMembers"
            >> beam.ParDo(
                IndexMembersFn(self._source, self._staging, self._devkit, self._schema)
            )
        )


def _plan_group(group, num_shards, staging: StagingLayout, schema=None):
    """One split: read every index file, sort by TFDS key, cut, write each shard's list.
    Without num_shards, the schema's count for the split (classic: 1024 train), else
    TFDS's rule."""
    split, index_files = group
    if failed_already(staging, split):
        return
    planned = []
    with RecordedErrors(staging, f"{split}-plan", staging.staging_dir) as guard:
        members = MemberTable.concat(
            split, [member_table.read(path) for path in sorted(index_files)]
        )
        if num_shards is None and schema is not None:
            num_shards = schema.default_num_shards(split, len(members))
        cut = plan.plan_members(members, num_shards)
        for index, count, part in cut:
            path = staging.plan_file(split, index, count)
            member_table.write(path, part)
            planned.append((split, index, count, path))
        totals = {"num_shards": len(cut), "num_images": len(members)}
        storage.write_bytes(staging.planned_file(split), json.dumps(totals).encode("utf-8"))
    if not guard.failed:
        yield from planned


class PlanShards(beam.PTransform):
    """Per split: sort member descriptors by TFDS key and cut them into shards."""

    def __init__(self, num_shards: int | None, staging: StagingLayout, schema=None):
        super().__init__()
        self._num_shards = num_shards
        self._staging = staging
        self._schema = schema

    def expand(self, index_files):
        return (
            index_files
            | "GroupBySplit" >> beam.GroupByKey()
            | "CutIntoShards"
            >> beam.FlatMap(_plan_group, self._num_shards, self._staging, self._schema)
            | "SpreadShards" >> beam.Reshuffle()
        )


class WriteShardFn(beam.DoFn):
    def __init__(
        self, settings: Settings, source: Source, staging: StagingLayout, schema=None
    ):
        self._settings = settings
        self._source = source
        self._staging = staging
        self._schema = schema
        self.read = Metrics.counter(METRICS_NAMESPACE, "images_read")
        self.written = Metrics.counter(METRICS_NAMESPACE, "images_written")
        self.fixed = Metrics.counter(METRICS_NAMESPACE, "images_fixed")
        self.skipped = Metrics.counter(METRICS_NAMESPACE, "images_skipped")
        self.bytes = Metrics.counter(METRICS_NAMESPACE, "bytes_written")
        self.shards = Metrics.counter(METRICS_NAMESPACE, "shards_written")

    def setup(self):
        shards.keep_freed_memory()

    def process(self, task):
        split, index, num_shards, members_file = task
        if failed_already(self._staging, split):
            return
        with _without_cyclic_gc():
            members = tuple(member_table.read(members_file).to_refs())
            spec = plan.ShardSpec(split, index, num_shards, members)
            del members
            num_members = len(spec.members)
            with RecordedErrors(
                self._staging, f"{split}-{index:05d}", self._staging.staging_dir
            ) as guard:
                result = shards.write_shard(
                    spec, self._settings, self._source, self._staging.staging_dir,
                    self._schema,
                )
                del spec
                storage.write_bytes(
                    self._staging.result_file(result.split, result.index),
                    result.to_json().encode("utf-8"),
                )
        if guard.failed:
            return
        self.read.inc(num_members)
        self.written.inc(result.num_examples)
        self.fixed.inc(len(result.fixed))
        self.skipped.inc(len(result.skipped))
        self.bytes.inc(result.num_bytes)
        self.shards.inc()
        yield result.split, result.index, result.num_examples


class WriteShards(beam.PTransform):
    """Each shard: read its members by offset, fix, encode, write; record its checksum."""

    def __init__(
        self, settings: Settings, source: Source, staging: StagingLayout, schema=None
    ):
        """schema: the output's (`formats.base.Schema`); default: imagenet2012's."""
        super().__init__()
        self._fn = WriteShardFn(settings, source, staging, schema)

    def expand(self, tasks):
        return tasks | "WriteShard" >> beam.ParDo(self._fn)


def build_pipeline(
    pipeline: beam.Pipeline,
    source: Source,
    inputs: list[tuple[str, str]],
    settings: Settings,
    staging: StagingLayout,
    devkit=None,
    schema=None,
):
    """inputs: (split, path) pairs. The index and plan files go to the staging work dir
    (removed with it when publishing). devkit: see `IndexMembersFn`. schema: the
    output's (`formats.schemas`, configured); default: imagenet2012's. Returns the
    PCollection of (split, shard, count)."""
    if schema is None:
        schema = schemas.for_output(layout.IMAGENET2012)
    return (
        pipeline
        | "IndexArchives" >> IndexArchives(source, inputs, staging, devkit, schema)
        | "PlanShards" >> PlanShards(settings.num_shards, staging, schema)
        | "WriteShards" >> WriteShards(settings, source, staging, schema)
    )
