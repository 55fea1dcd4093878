"""The files the pipeline passes between its steps instead of member descriptors."""

from __future__ import annotations

from imagenet_beam import pipeline, plan
from imagenet_beam.layout import StagingLayout
from imagenet_beam.sources import MemberRef


def _refs(split: str, archive: str, n: int, label: int = 3, stem: str = "n0000") -> list[MemberRef]:
    return [
        MemberRef(split, archive, 512 * (i + 1), 1000 + i, f"{stem}_{i}.JPEG", label)
        for i in range(n)
    ]


def test_index_files_give_back_the_same_descriptors(tmp_path):
    refs = _refs("train", "/data/ILSVRC2012_img_train.tar", 5)
    path = str(tmp_path / "train-x.json")
    pipeline._write_members(path, refs)
    assert pipeline._read_members(path) == refs


def test_plan_files_keep_key_order_across_archives(tmp_path):
    refs = _refs("test", "/a/test.tar", 4) + _refs("test", "/b/patch.tar", 3, label=-1, stem="p")
    [spec] = plan.plan_split("test", refs, num_shards=1)
    index_files = [str(tmp_path / "test-b.json"), str(tmp_path / "test-a.json")]
    pipeline._write_members(index_files[0], refs[4:])
    pipeline._write_members(index_files[1], refs[:4])
    [(*_, path)] = pipeline._plan_group(("test", index_files), 1, StagingLayout(str(tmp_path)))
    assert pipeline._read_ordered_members(path) == spec.members
    assert {m.archive for m in spec.members} == {"/a/test.tar", "/b/patch.tar"}
    keys = [plan.example_key("test", m.file_name) for m in spec.members]
    assert keys == sorted(keys)


def test_index_files_carry_tfds_keys(tmp_path):
    """The keys are worked out where the indexing runs (in parallel), once a member."""
    refs = _refs("validation", "/data/val.tar", 3)
    path = str(tmp_path / "validation-x.json")
    pipeline._write_members(path, refs)
    rows = pipeline._read_rows([path], {})
    assert [int(r[plan.KEY], 16) for r in rows] == [
        plan.example_key("validation", m.file_name) for m in refs
    ]


def test_planning_a_split_writes_one_member_list_per_shard(tmp_path):
    work = str(tmp_path)
    index_files = []
    for n, archive in enumerate(("/x/one.tar", "/x/two.tar")):
        path = str(tmp_path / f"validation-{n}.json")
        pipeline._write_members(
            path,
            [MemberRef("validation", archive, 512 * i, 10, f"v{n}_{i}.JPEG", i) for i in range(6)],
        )
        index_files.append(path)
    tasks = list(pipeline._plan_group(("validation", index_files), 3, StagingLayout(work)))
    assert [(s, i, k) for s, i, k, _ in tasks] == [("validation", i, 3) for i in range(3)]
    written = [pipeline._read_ordered_members(path) for *_, path in tasks]
    expected = plan.plan_split(
        "validation",
        [m for path in index_files for m in pipeline._read_members(path)],
        3,
    )
    assert written == [spec.members for spec in expected]
    assert sum(len(w) for w in written) == 12
