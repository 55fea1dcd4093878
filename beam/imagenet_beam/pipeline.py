"""The Beam pipeline: index the archives → plan shards → write shards.

Only small member descriptors pass through a shuffle; image bytes are read by the DoFn
that writes their shard, so memory is bounded by one shard and any runner can spread
shards over its workers.
"""

from __future__ import annotations

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


def list_work_items(source: tuple[str, str]):
    """(split, archive) → one work item per archive, or per class tar for train."""
    split, archive = source
    if split == dataset.TRAIN:
        for inner in archives.list_inner_tars(archive):
            yield split, archive, inner
    else:
        yield split, archive, None


class IndexMembersFn(beam.DoFn):
    def __init__(self):
        self.indexed = Metrics.counter("imagenet", "members_indexed")

    def process(self, item):
        split, archive, inner = item
        if inner is not None:
            refs = archives.index_inner_tar(archive, archives.TarEntry(*inner))
        else:
            refs = archives.index_flat_archive(split, archive)
        self.indexed.inc(len(refs))
        for ref in refs:
            yield ref.split, ref


class IndexArchives(beam.PTransform):
    """Header-only walk of the archives → (split, MemberRef) for every image."""

    def __init__(self, sources: list[tuple[str, str]]):
        super().__init__()
        self._sources = sources

    def expand(self, pbegin):
        return (
            pbegin
            | "ListArchives" >> beam.Create(self._sources)
            | "ListWorkItems" >> beam.FlatMap(list_work_items)
            | "SpreadWorkItems" >> beam.Reshuffle()
            | "IndexMembers" >> beam.ParDo(IndexMembersFn())
        )


def _plan_group(group, num_shards):
    split, members = group
    return plan.plan_split(split, members, num_shards)


class PlanShards(beam.PTransform):
    """Per split: sort member descriptors by TFDS key and cut them into shards."""

    def __init__(self, num_shards: int | None):
        super().__init__()
        self._num_shards = num_shards

    def expand(self, refs):
        return (
            refs
            | "GroupBySplit" >> beam.GroupByKey()
            | "CutIntoShards" >> beam.FlatMap(_plan_group, self._num_shards)
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

    def process(self, spec):
        result = shards.write_shard(spec, self._settings)
        name = f"{result.split}-{result.index:05d}.json"
        storage.write_bytes(
            storage.join(self._results_dir, name), result.to_json().encode("utf-8")
        )
        self.examples.inc(result.num_examples)
        self.fixed.inc(len(result.fixed))
        self.skipped.inc(len(result.skipped))
        self.bytes.inc(result.num_bytes)
        yield result


class WriteShards(beam.PTransform):
    """Each shard: read its members by offset, fix, encode, write; record its checksum."""

    def __init__(self, settings: shards.WriteSettings, results_dir: str):
        super().__init__()
        self._settings = settings
        self._results_dir = results_dir

    def expand(self, specs):
        return specs | "WriteShard" >> beam.ParDo(WriteShardFn(self._settings, self._results_dir))


def build_pipeline(
    pipeline: beam.Pipeline,
    sources: list[tuple[str, str]],
    settings: shards.WriteSettings,
    num_shards: int | None,
    results_dir: str,
) -> None:
    (
        pipeline
        | "IndexArchives" >> IndexArchives(sources)
        | "PlanShards" >> PlanShards(num_shards)
        | "WriteShards" >> WriteShards(settings, results_dir)
    )
