"""The files the pipeline passes between its steps instead of member descriptors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from imagenet_beam import member_table, pipeline, plan
from imagenet_beam.layout import StagingLayout
from imagenet_beam.member_table import MemberTable
from imagenet_beam.sources import MemberRef


def _refs(split: str, archive: str, n: int, label: int = 3, stem: str = "n0000") -> list[MemberRef]:
    return [
        MemberRef(split, archive, 512 * (i + 1), 1000 + i, f"{stem}_{i}.JPEG", label)
        for i in range(n)
    ]


def _write(path: str, split: str, refs: list[MemberRef]) -> None:
    member_table.write(path, MemberTable.from_refs(split, refs))


def test_index_files_give_back_the_same_descriptors(tmp_path):
    refs = _refs("train", "/data/ILSVRC2012_img_train.tar", 5)
    # What a schema attaches (bounding boxes, ReaL labels) comes back as it went in.
    refs[1] = refs[1]._replace(extra=[[0.1, 0.2, 0.5, 0.75]])
    refs[2] = refs[2]._replace(extra=[])
    path = str(tmp_path / "train-x.arrow")
    _write(path, "train", refs)
    back = member_table.read(path)
    assert back.split == "train" and back.to_refs() == refs
    without = _refs("train", "/data/ILSVRC2012_img_train.tar", 3)
    _write(path, "train", without)
    assert member_table.read(path).to_refs() == without


def test_member_files_are_arrow_files_any_arrow_reader_opens(tmp_path):
    path = tmp_path / "validation-x.arrow"
    _write(str(path), "validation", _refs("validation", "/data/val.tar", 3))
    table = ipc.open_file(pa.memory_map(str(path))).read_all()
    assert table.column("file_name").to_pylist() == [f"n0000_{i}.JPEG" for i in range(3)]
    assert table.schema.metadata[b"split"] == b"validation"
    # The same members give the same bytes: a re-run's work files are the first run's.
    _write(str(tmp_path / "again.arrow"), "validation", _refs("validation", "/data/val.tar", 3))
    assert (tmp_path / "again.arrow").read_bytes() == path.read_bytes()


def test_a_file_that_is_not_a_member_table_is_refused(tmp_path):
    path = tmp_path / "other.arrow"
    table = pa.table({"file_name": ["a.JPEG"]})
    with ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(ValueError, match="not a member table"):
        member_table.read(str(path))


def test_plan_files_keep_key_order_across_archives(tmp_path):
    refs = _refs("test", "/a/test.tar", 4) + _refs("test", "/b/patch.tar", 3, label=-1, stem="p")
    [spec] = plan.plan_split("test", refs, num_shards=1)
    index_files = [str(tmp_path / "test-b.arrow"), str(tmp_path / "test-a.arrow")]
    _write(index_files[0], "test", refs[4:])
    _write(index_files[1], "test", refs[:4])
    [(*_, path)] = pipeline._plan_group(("test", index_files), 1, StagingLayout(str(tmp_path)))
    planned = member_table.read(path)
    assert tuple(planned.to_refs()) == spec.members
    assert {m.archive for m in spec.members} == {"/a/test.tar", "/b/patch.tar"}
    keys = [plan.example_key("test", m.file_name) for m in spec.members]
    assert keys == sorted(keys) == planned.keys()


def test_index_files_carry_tfds_keys(tmp_path):
    """The keys are worked out where the indexing runs (in parallel), once a member."""
    refs = _refs("validation", "/data/val.tar", 3)
    path = str(tmp_path / "validation-x.arrow")
    _write(path, "validation", refs)
    assert member_table.read(path).keys() == [
        plan.example_key("validation", m.file_name) for m in refs
    ]


def test_planning_a_split_writes_one_member_list_per_shard(tmp_path):
    work = str(tmp_path)
    index_files = []
    for n, archive in enumerate(("/x/one.tar", "/x/two.tar")):
        path = str(tmp_path / f"validation-{n}.arrow")
        _write(
            path, "validation",
            [MemberRef("validation", archive, 512 * i, 10, f"v{n}_{i}.JPEG", i) for i in range(6)],
        )
        index_files.append(path)
    tasks = list(pipeline._plan_group(("validation", index_files), 3, StagingLayout(work)))
    assert [(s, i, k) for s, i, k, _ in tasks] == [("validation", i, 3) for i in range(3)]
    written = [tuple(member_table.read(path).to_refs()) for *_, path in tasks]
    expected = plan.plan_split(
        "validation",
        [m for path in index_files for m in member_table.read(path).to_refs()],
        3,
    )
    assert written == [spec.members for spec in expected]
    assert sum(len(w) for w in written) == 12
