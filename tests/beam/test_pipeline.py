"""The pipeline's composite transforms on the real DirectRunner (TestPipeline, assert_that)."""

from __future__ import annotations

import hashlib
import json
import os

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from imagenet_beam import dataset, member_table, pipeline, plan, shards, sources, synthetic
from imagenet_beam.layout import StagingLayout
from imagenet_beam.member_table import MemberTable
from imagenet_beam.settings import Settings


def _pipeline() -> test_pipeline.TestPipeline:
    # (Imported as a module: pytest would take a TestPipeline name for a test class.)
    options = beam.options.pipeline_options.PipelineOptions(["--direct_running_mode=in_memory"])
    return test_pipeline.TestPipeline(runner="DirectRunner", options=options)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("pipeline_manual")),
        num_classes=3, train_per_class=4, num_validation=7, splits=("train", "validation"),
    )


def _inputs(generated) -> list[tuple[str, str]]:
    return [
        (dataset.TRAIN, os.path.join(generated.manual_dir, dataset.TRAIN_ARCHIVE)),
        (dataset.VALIDATION, os.path.join(generated.manual_dir, dataset.VALIDATION_ARCHIVE)),
    ]


def _write_index(path: str, split: str, refs) -> None:
    member_table.write(path, MemberTable.from_refs(split, refs))


def _all_members(generated) -> list[sources.MemberRef]:
    source = sources.get()
    return [ref for split, path in _inputs(generated)
            for item in source.work_items(split, path) for ref in source.index(item)]


def test_index_archives_writes_one_index_file_per_work_item(generated, tmp_path):
    staging = StagingLayout(str(tmp_path / "staging"))
    expected = _all_members(generated)

    def every_member_indexed_once(actual):
        splits = sorted(split for split, _ in actual)
        # One work item per class tar of train, one for the flat validation tar.
        if splits != ["train"] * 3 + ["validation"]:
            raise BeamAssertException(f"work items {splits}")
        indexed = [m for _, path in actual for m in member_table.read(path).to_refs()]
        if sorted(indexed) != sorted(expected):
            raise BeamAssertException("the index files do not hold every member once")
        if not all(path.startswith(staging.index_dir) for _, path in actual):
            raise BeamAssertException("index files outside the staging work dir")

    with _pipeline() as p:
        index_files = p | pipeline.IndexArchives(sources.get(), _inputs(generated), staging)
        assert_that(index_files, every_member_indexed_once)


def test_plan_shards_cuts_each_split_in_tfds_key_order(generated, tmp_path):
    staging = StagingLayout(str(tmp_path / "staging"))
    members = _all_members(generated)
    index_files = []
    for split in (dataset.TRAIN, dataset.VALIDATION):
        path = staging.index_file(split, "all")
        _write_index(path, split, [m for m in members if m.split == split])
        index_files.append((split, path))

    with _pipeline() as p:
        planned = p | beam.Create(index_files) | pipeline.PlanShards(2, staging)
        assert_that(
            planned | beam.Map(lambda task: task[:3]),
            equal_to([("train", 0, 2), ("train", 1, 2), ("validation", 0, 2),
                      ("validation", 1, 2)]),
        )

    for split in (dataset.TRAIN, dataset.VALIDATION):
        expected = plan.plan_split(split, [m for m in members if m.split == split], 2)
        written = [tuple(member_table.read(staging.plan_file(split, i, 2)).to_refs())
                   for i in range(2)]
        assert written == [spec.members for spec in expected]
        keys = [plan.example_key(split, m.file_name) for shard in written for m in shard]
        assert keys == sorted(keys)


def test_write_shards_writes_each_shard_and_its_result(generated, tmp_path):
    staging = StagingLayout(str(tmp_path / "staging"))
    validation = [m for m in _all_members(generated) if m.split == dataset.VALIDATION]
    specs = plan.plan_split(dataset.VALIDATION, validation, 2)
    index_file = staging.index_file(dataset.VALIDATION, "all")
    _write_index(index_file, dataset.VALIDATION, validation)
    tasks = list(pipeline._plan_group((dataset.VALIDATION, [index_file]), 2, staging))
    settings = Settings.from_mapping(
        {"manual_dir": generated.manual_dir, "data_dir": str(tmp_path)}
    )
    os.makedirs(staging.results_dir)

    with _pipeline() as p:
        written = (p | beam.Create(tasks)
                   | pipeline.WriteShards(settings, sources.get(), staging))
        assert_that(written, equal_to(
            [(dataset.VALIDATION, spec.index, len(spec.members)) for spec in specs]
        ))

    results = sorted(shards.iter_results(staging.results_dir), key=lambda r: r.index)
    assert [r.num_examples for r in results] == [len(s.members) for s in specs]
    for result in results:
        data = open(os.path.join(staging.staging_dir, result.file), "rb").read()
        assert hashlib.sha256(data).hexdigest() == result.sha256
        assert len(data) == result.num_bytes
    stored = json.loads(open(staging.result_file(dataset.VALIDATION, 0)).read())
    assert stored["file"] == "imagenet2012-validation.tfrecord-00000-of-00002"
