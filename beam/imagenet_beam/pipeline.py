"""The Beam pipeline: index the archives → plan shards → write shards.

Only file paths pass through the shuffles: each index step writes its member descriptors
to a file in the work directory, the plan step writes each shard's member list to a file,
and the DoFn that writes a shard reads its list and then the image bytes by offset. So what
a runner holds between steps grows with the number of archives and shards, not images, and
memory is bounded by one shard per writer on any runner.
"""

from __future__ import annotations

import hashlib
import json

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from imagenet_beam import archives, dataset, images, plan, shards, storage


class ConvertOptions(PipelineOptions):
    """The conversion's own flags; every standard Beam option passes through too."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--manual_dir", help="Folder (local or gs://) holding the ILSVRC 2012 tarballs."
        )
        parser.add_argument(
            "--data_dir",
            help="Where to write: the output goes to DATA_DIR/imagenet2012/5.1.0/ as TFDS does.",
        )
        parser.add_argument(
            "--splits",
            default=",".join(dataset.SPLITS),
            help="Comma-separated splits to convert (train, validation, test).",
        )
        parser.add_argument(
            "--file_format",
            default=shards.TFRECORD,
            choices=shards.FILE_FORMATS,
            help="Shard format: tfrecord (tfds.load/as_dataset) or array_record "
            "(as_data_source, random access).",
        )
        parser.add_argument(
            "--num_shards",
            type=int,
            default=None,
            help="Shards per split; default: TFDS's rule (64 MiB–1 GiB a shard).",
        )
        parser.add_argument(
            "--on_corrupt",
            default=shards.ON_CORRUPT_FAIL,
            choices=shards.ON_CORRUPT_POLICIES,
            help="A member that is not a usable image: fail the run (default) or skip it "
            "and list it in lineage.json.",
        )
        parser.add_argument(
            "--test_archive",
            default=None,
            help="File name of the test tar in manual_dir; default: "
            f"{dataset.TEST_ARCHIVE_PATCHED} when present, else {dataset.TEST_ARCHIVE_2012} "
            "(which TFDS takes to be already patched).",
        )
        parser.add_argument(
            "--validate",
            action="store_true",
            default=False,
            help="Decode every image fully (about 1 ms each) instead of checking headers.",
        )
        parser.add_argument(
            "--resize",
            default=None,
            help="Re-encode every image scaled down: shorter:N (shorter side at most N "
            "pixels, e.g. shorter:256) or max:N (longer side at most N). Default: keep the "
            "original bytes, as TFDS does.",
        )
        parser.add_argument(
            "--max_pixels",
            type=int,
            default=images.DEFAULT_MAX_PIXELS,
            help="Images claiming more pixels than this are treated as corrupt.",
        )
        parser.add_argument(
            "--staging_dir",
            default=None,
            help="Where shards are written before they become visible; default: "
            "DATA_DIR/imagenet2012/.5.1.0.incomplete.",
        )
        parser.add_argument(
            "--stage_only",
            action="store_true",
            default=False,
            help="Write only the requested splits into the staging directory (replacing "
            "those splits' earlier attempts) and publish nothing; `publish` does that.",
        )
        parser.add_argument(
            "--overwrite",
            action="store_true",
            default=False,
            help="Replace an existing output version instead of refusing.",
        )


INDEX_DIR = "index"  # in the work directory: one file of member descriptors per work item
PLAN_DIR = "plan"  # one file per shard: its members in key order


def _write_members(path: str, members) -> None:
    """Member descriptors as compact JSON; `_read_members` gives back equal MemberRefs."""
    by_archive: dict[str, list] = {}
    for m in members:
        by_archive.setdefault(m.archive, []).append([m.offset, m.size, m.file_name, m.label])
    text = json.dumps(
        {"split": members[0].split if members else None, "archives": by_archive},
        separators=(",", ":"),
    )
    storage.write_bytes(path, text.encode("utf-8"))


def _read_members(path: str) -> list[archives.MemberRef]:
    record = json.loads(storage.read_bytes(path))
    return [
        archives.MemberRef(record["split"], archive, offset, size, file_name, label)
        for archive, rows in record["archives"].items()
        for offset, size, file_name, label in rows
    ]


def _read_ordered_members(path: str) -> tuple[archives.MemberRef, ...]:
    """A shard's member list, in the key order it was planned in."""
    record = json.loads(storage.read_bytes(path))
    names = record["archives_in_order"]
    return tuple(
        archives.MemberRef(record["split"], names[a], offset, size, file_name, label)
        for a, offset, size, file_name, label in record["members"]
    )


def _write_ordered_members(path: str, spec: plan.ShardSpec) -> None:
    names = sorted({m.archive for m in spec.members})
    number = {name: i for i, name in enumerate(names)}
    text = json.dumps(
        {
            "split": spec.split,
            "archives_in_order": names,
            "members": [
                [number[m.archive], m.offset, m.size, m.file_name, m.label]
                for m in spec.members
            ],
        },
        separators=(",", ":"),
    )
    storage.write_bytes(path, text.encode("utf-8"))


def list_work_items(source: tuple[str, str]):
    """(split, archive) → one work item per archive, or per class tar for train."""
    split, archive = source
    if split == dataset.TRAIN:
        for inner in archives.list_inner_tars(archive):
            yield split, archive, tuple(inner)
    else:
        yield split, archive, None


class IndexMembersFn(beam.DoFn):
    """One work item → its member descriptors in a file; yields (split, that file)."""

    def __init__(self, work_dir: str):
        self._work_dir = work_dir
        self.indexed = Metrics.counter("imagenet", "members_indexed")

    def process(self, item):
        split, archive, inner = item
        if inner is not None:
            refs = archives.index_inner_tar(archive, archives.TarEntry(*inner))
        else:
            refs = archives.index_flat_archive(split, archive)
        self.indexed.inc(len(refs))
        if not refs:
            return
        ident = hashlib.sha1(json.dumps([archive, inner]).encode("utf-8")).hexdigest()[:20]
        path = storage.join(self._work_dir, INDEX_DIR, f"{split}-{ident}.json")
        _write_members(path, refs)
        yield split, path


class IndexArchives(beam.PTransform):
    """Header-only walk of the archives → (split, index file) per work item."""

    def __init__(self, sources: list[tuple[str, str]], work_dir: str):
        super().__init__()
        self._sources = sources
        self._work_dir = work_dir

    def expand(self, pbegin):
        return (
            pbegin
            | "ListArchives" >> beam.Create(self._sources)
            | "ListWorkItems" >> beam.FlatMap(list_work_items)
            | "SpreadWorkItems" >> beam.Reshuffle()
            | "IndexMembers" >> beam.ParDo(IndexMembersFn(self._work_dir))
        )


def _plan_group(group, num_shards, work_dir):
    """One split: read every index file, sort by TFDS key, cut, write each shard's list."""
    split, index_files = group
    members = [m for path in sorted(index_files) for m in _read_members(path)]
    specs = plan.plan_split(split, members, num_shards)
    del members
    for spec in specs:
        name = f"{split}-{spec.index:05d}-of-{spec.num_shards:05d}.json"
        path = storage.join(work_dir, PLAN_DIR, name)
        _write_ordered_members(path, spec)
        yield (spec.split, spec.index, spec.num_shards, path)


class PlanShards(beam.PTransform):
    """Per split: sort member descriptors by TFDS key and cut them into shards."""

    def __init__(self, num_shards: int | None, work_dir: str):
        super().__init__()
        self._num_shards = num_shards
        self._work_dir = work_dir

    def expand(self, index_files):
        return (
            index_files
            | "GroupBySplit" >> beam.GroupByKey()
            | "CutIntoShards" >> beam.FlatMap(_plan_group, self._num_shards, self._work_dir)
            | "SpreadShards" >> beam.Reshuffle()
        )


class WriteShardFn(beam.DoFn):
    def __init__(self, settings: shards.WriteSettings, results_dir: str):
        self._settings = settings
        self._results_dir = results_dir
        self.examples = Metrics.counter("imagenet", "examples_written")
        self.fixed = Metrics.counter("imagenet", "images_fixed")
        self.skipped = Metrics.counter("imagenet", "images_skipped")
        self.bytes = Metrics.counter("imagenet", "bytes_written")

    def setup(self):
        shards.keep_freed_memory()

    def process(self, task):
        split, index, num_shards, members_file = task
        spec = plan.ShardSpec(split, index, num_shards, _read_ordered_members(members_file))
        result = shards.write_shard(spec, self._settings)
        del spec
        name = f"{result.split}-{result.index:05d}.json"
        storage.write_bytes(
            storage.join(self._results_dir, name), result.to_json().encode("utf-8")
        )
        self.examples.inc(result.num_examples)
        self.fixed.inc(len(result.fixed))
        self.skipped.inc(len(result.skipped))
        self.bytes.inc(result.num_bytes)
        yield result.split, result.index, result.num_examples


class WriteShards(beam.PTransform):
    """Each shard: read its members by offset, fix, encode, write; record its checksum."""

    def __init__(self, settings: shards.WriteSettings, results_dir: str):
        super().__init__()
        self._settings = settings
        self._results_dir = results_dir

    def expand(self, tasks):
        return tasks | "WriteShard" >> beam.ParDo(WriteShardFn(self._settings, self._results_dir))


def build_pipeline(
    pipeline: beam.Pipeline,
    sources: list[tuple[str, str]],
    settings: shards.WriteSettings,
    num_shards: int | None,
    results_dir: str,
    work_dir: str,
) -> None:
    """work_dir: where the index and plan files go (removed with it when publishing)."""
    (
        pipeline
        | "IndexArchives" >> IndexArchives(sources, work_dir)
        | "PlanShards" >> PlanShards(num_shards, work_dir)
        | "WriteShards" >> WriteShards(settings, results_dir)
    )
