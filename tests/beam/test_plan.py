"""Shard planning must reproduce TFDS's own key, shard count and boundaries exactly."""

from __future__ import annotations

import random

import pytest
from tensorflow_datasets.core import hashing, naming
from tensorflow_datasets.core.utils import shard_utils

from imagenet_beam import dataset, layout, plan
from imagenet_beam.member_table import MemberTable
from imagenet_beam.plan import PlanError
from imagenet_beam.sources import MemberRef

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
OVERHEAD = plan.RECORD_OVERHEAD_BYTES

NAMES = [
    "n01440764_10026.JPEG",
    "n01440764_1.JPEG",
    "n15075141_9999.JPEG",
    "ILSVRC2012_val_00000001.JPEG",
    "ILSVRC2012_val_00050000.JPEG",
    "ILSVRC2012_test_00100000.JPEG",
    "n01739381_1309.JPEG",
    "n02105855_2933.JPEG",
    "dir/sub/n01440764_3.JPEG",
    "windows\\style\\path.JPEG",
    "ünïcödé_猫_🐱.JPEG",
    "",
    "a",
    " leading space.JPEG",
    "x" * 300,
]


def tfds_shard_count(total_bytes: int, num_examples: int) -> int:
    return shard_utils.ShardConfig.calculate_number_shards(total_bytes, num_examples)


def member(name: str, size: int = 1000, split: str = dataset.TRAIN, offset: int = 0) -> MemberRef:
    return MemberRef(split, f"/archives/{split}.tar", offset, size, name, 7)


def members(n: int, split: str = dataset.TRAIN, size: int = 1000) -> list[MemberRef]:
    return [member(f"img_{i:05d}.JPEG", size, split, offset=512 * i) for i in range(n)]


# --- example_key ---------------------------------------------------------------------------


@pytest.mark.parametrize("split", [*dataset.SPLITS, "train[:10%]", "ünï"])
def test_example_key_is_tfds_hasher(split: str) -> None:
    hasher = hashing.Hasher(split)
    for name in NAMES:
        assert plan.example_key(split, name) == hasher.hash_key(name), name


def test_example_key_matches_tfds_on_generated_names() -> None:
    rng = random.Random(0)
    alphabet = "abcXYZ019_-./\\ éü猫"
    for _ in range(300):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        split = rng.choice(dataset.SPLITS)
        assert plan.example_key(split, name) == hashing.Hasher(split).hash_key(name), name


def test_example_key_is_salted_by_split() -> None:
    name = "n01440764_10026.JPEG"
    keys = {plan.example_key(split, name) for split in dataset.SPLITS}
    assert len(keys) == 3
    assert all(0 <= k < 1 << 128 for k in keys)


# --- shard count ---------------------------------------------------------------------------


def _count_grid() -> list[tuple[int, int]]:
    grid = []
    examples = [1, 2, 3, 7, 16, 100, 511, 512, 1023, 1024, 1025, 2048, 5000, 50_000, 100_000]
    examples += [1_281_167]
    for n in examples:
        for total in (0, 1, 1000, 10 * MiB, 64 * MiB, GiB, 6_744_924_160, 100 * GiB):
            grid.append((total, n))
        # Right on and around each 64 MiB boundary, overhead included.
        for k in (1, 2, 3, 4, 8, 16, 31, 32, 33, 64, 512, 1023, 1024, 1025):
            edge = k * 64 * MiB - n * OVERHEAD
            for total in (edge - 1, edge, edge + 1):
                if total >= 0:
                    grid.append((total, n))
        # ... and around each 1 GiB boundary.
        for k in (1, 2, 4, 128, 512, 1024):
            edge = k * GiB - n * OVERHEAD
            for total in (edge - 1, edge, edge + 1):
                if total >= 0:
                    grid.append((total, n))
    return grid


def test_shard_count_is_tfds_over_a_grid() -> None:
    grid = _count_grid()
    assert len(grid) > 500
    for total, n in grid:
        assert plan.tfds_shard_count(total, n) == tfds_shard_count(total, n), (total, n)


@pytest.mark.parametrize(
    ("total", "n", "expected"),
    [
        (0, 1, 1),
        (1000, 10, 1),
        (64 * MiB - 10 * OVERHEAD, 10, 1),
        (128 * MiB - 10 * OVERHEAD, 10, 2),
        (128 * MiB - 10 * OVERHEAD - 1, 10, 1),  # only the overhead lifts it to 2
        (140_000_000_000, 1_281_167, 1024),  # full ImageNet train
        (dataset.PUBLISHED_ARCHIVES[dataset.TRAIN_ARCHIVE].size, 1_281_167, 1024),
        (6_400_000_000, 50_000, 64),  # ImageNet validation
        (13_000_000_000, 100_000, 128),  # ImageNet test
        (140_000_000_000, 1000, 512),  # big but few examples: at most n shards
        (100 * GiB, 600, 512),
        (3 * GiB, 3, 1),  # too few examples for 2+ shards of at most 1 GiB: TFDS gives 1
        (1536 * GiB, 2_000_000, 2048),  # > 1 TiB
        (3 * TiB, 5_000_000, 3072),
        (5 * TiB, 6000, 5120),
        (2 * TiB + GiB, 4000, 3072),  # 2049 GiB needs more than 2048 shards
    ],
)
def test_shard_count_known_points(total: int, n: int, expected: int) -> None:
    assert tfds_shard_count(total, n) == expected
    assert plan.tfds_shard_count(total, n) == expected


def test_shard_count_above_one_tib_is_a_multiple_of_1024() -> None:
    for tib in (1.01, 1.5, 2, 2.5, 4, 7.9):
        total = int(tib * TiB)
        n = 10_000_000
        count = plan.tfds_shard_count(total, n)
        assert count == tfds_shard_count(total, n)
        assert count >= 2048 and count % 1024 == 0
        assert (total + n * OVERHEAD) // GiB <= count  # TFDS's floor of the 1 GiB cap


# --- boundaries ----------------------------------------------------------------------------


def test_shard_boundaries_are_tfds() -> None:
    cases = [(1, 1), (2, 1), (2, 2), (3, 2), (10, 3), (10, 4), (10, 10), (7, 5)]
    cases += [(1_281_167, 1024), (50_000, 64), (100_000, 128), (1025, 1024), (999_999, 7)]
    cases += [(n, k) for n in range(1, 40) for k in range(1, n + 1)]
    for n, k in cases:
        ours = plan.shard_boundaries(n, k)
        assert ours == list(shard_utils.get_shard_boundaries(n, k)), (n, k)
        assert len(ours) == k and ours[-1] == n
        assert all(a <= b for a, b in zip([0, *ours[:-1]], ours, strict=True))


# --- plan_split ----------------------------------------------------------------------------


def sizes(specs: list[plan.ShardSpec]) -> list[int]:
    return [len(s.members) for s in specs]


def test_plan_writes_members_in_key_order_across_shards() -> None:
    refs = members(37, dataset.VALIDATION)
    specs = plan.plan_split(dataset.VALIDATION, refs, num_shards=5)
    written = [m for s in specs for m in s.members]
    assert sorted(written) == sorted(refs)
    keys = [plan.example_key(dataset.VALIDATION, m.file_name) for m in written]
    assert keys == sorted(keys)
    assert written != sorted(refs, key=lambda m: m.file_name)  # key order, not name order
    assert keys == sorted(hashing.Hasher(dataset.VALIDATION).hash_key(m.file_name) for m in refs)


def test_plan_shard_sizes_follow_the_boundaries() -> None:
    refs = members(37)
    specs = plan.plan_split(dataset.TRAIN, refs, num_shards=5)
    bounds = shard_utils.get_shard_boundaries(37, 5)
    assert sizes(specs) == [b - a for a, b in zip([0, *bounds[:-1]], bounds, strict=True)]
    assert [s.index for s in specs] == list(range(5))
    assert {s.num_shards for s in specs} == {5}
    assert {s.split for s in specs} == {dataset.TRAIN}


def test_plan_does_not_depend_on_input_order() -> None:
    refs = members(50, dataset.TEST)
    shuffled = list(refs)
    random.Random(1).shuffle(shuffled)
    assert plan.plan_split(dataset.TEST, shuffled, 4) == plan.plan_split(dataset.TEST, refs, 4)
    assert plan.plan_split(dataset.TEST, iter(shuffled), 4) == plan.plan_split(
        dataset.TEST, refs, 4
    )


def test_plan_order_depends_on_split_salt() -> None:
    refs = members(30)
    order = {
        split: [m.file_name for m in plan.plan_split(split, refs, 1)[0].members]
        for split in dataset.SPLITS
    }
    assert len({tuple(v) for v in order.values()}) == 3


@pytest.mark.parametrize(("n", "k", "expected"), [(10, 3, [3, 4, 3]), (4, 4, [1, 1, 1, 1])])
def test_plan_num_shards_override(n: int, k: int, expected: list[int]) -> None:
    specs = plan.plan_split(dataset.TRAIN, members(n), num_shards=k)
    assert len(specs) == k
    assert sizes(specs) == expected


def test_plan_default_shard_count_is_tfds_rule() -> None:
    small = plan.plan_split(dataset.TRAIN, members(100))
    assert len(small) == 1 and small[0].num_shards == 1

    # 2048 images of 64 MiB each: ~128 GiB, which TFDS cuts into 1024 shards.
    refs = members(2048, size=64 * MiB)
    specs = plan.plan_split(dataset.TRAIN, refs)
    total = MemberTable.from_refs(dataset.TRAIN, refs).estimated_bytes()
    assert total > 2048 * 64 * MiB
    assert len(specs) == tfds_shard_count(total, len(refs)) == 1024
    assert sizes(specs) == [2] * 1024

    # 300 images of 1 MiB: ~300 MiB → 4 shards of at least 64 MiB.
    refs = members(300, size=MiB)
    total = MemberTable.from_refs(dataset.TRAIN, refs).estimated_bytes()
    specs = plan.plan_split(dataset.TRAIN, refs)
    assert len(specs) == tfds_shard_count(total, 300) == 4


def test_plan_estimate_counts_name_and_framing() -> None:
    m = member("ü.JPEG", size=1000)
    assert MemberTable.from_refs(dataset.TRAIN, [m]).estimated_bytes() == (
        1000 + len("ü.JPEG".encode()) + 48
    )


def test_plan_more_shards_than_images_raises() -> None:
    with pytest.raises(PlanError) as err:
        plan.plan_split(dataset.VALIDATION, members(5, dataset.VALIDATION), num_shards=6)
    message = str(err.value)
    assert "5 images" in message
    assert "6" in message
    assert "validation" in message
    assert len(plan.plan_split(dataset.VALIDATION, members(5), num_shards=5)) == 5


def test_plan_duplicate_file_names_raise() -> None:
    refs = members(10)
    dup = member("img_00003.JPEG", offset=99_999)
    with pytest.raises(PlanError, match="img_00003.JPEG") as err:
        plan.plan_split(dataset.TRAIN, [*refs, dup], num_shards=2)
    assert "same file name" in str(err.value)
    assert "1 members" in str(err.value)


def test_plan_duplicates_from_different_archives_raise() -> None:
    a = MemberRef(dataset.TEST, "/a/one.tar", 0, 10, "ILSVRC2012_test_00000001.JPEG", -1)
    b = a._replace(archive="/a/two.tar", offset=4096)
    with pytest.raises(PlanError, match="ILSVRC2012_test_00000001"):
        plan.plan_split(dataset.TEST, [a, b, member("other.JPEG", split=dataset.TEST)])


def test_plan_empty_split_raises() -> None:
    with pytest.raises(PlanError, match="no images"):
        plan.plan_split(dataset.TEST, [])
    with pytest.raises(PlanError, match="no images"):
        plan.plan_split(dataset.TEST, iter([]), num_shards=1)


# --- file names ----------------------------------------------------------------------------


def test_shard_file_name() -> None:
    assert (
        layout.shard_file_name("train", "tfrecord", 3, 1024)
        == "imagenet2012-train.tfrecord-00003-of-01024"
    )
    assert (
        layout.shard_file_name("validation", "array_record", 0, 1)
        == "imagenet2012-validation.array_record-00000-of-00001"
    )


@pytest.mark.parametrize(
    ("split", "fmt", "index", "count"),
    [
        ("train", "tfrecord", 3, 1024),
        ("test", "array_record", 127, 128),
        ("validation", "tfrecord", 0, 64),
    ],
)
def test_shard_file_name_is_tfds_template(split: str, fmt: str, index: int, count: int) -> None:
    template = naming.ShardedFileTemplate(
        data_dir="/data",
        dataset_name=dataset.DATASET_NAME,
        split=split,
        filetype_suffix=fmt,
    )
    expected = template.sharded_filepath(shard_index=index, num_shards=count)
    assert layout.shard_file_name(split, fmt, index, count) == expected.name


@pytest.mark.parametrize("count", [0, -1])
def test_non_positive_shard_count_is_refused(count: int) -> None:
    with pytest.raises(plan.PlanError, match="positive"):
        plan.plan_split(dataset.TRAIN, [member(f"n{i}.JPEG") for i in range(3)], count)


def test_names_that_differ_only_by_slash_direction_are_duplicates() -> None:
    with pytest.raises(plan.PlanError, match="same file name"):
        plan.plan_split(dataset.TEST, [member("a\\b.JPEG"), member("a/b.JPEG")], 1)


def test_too_few_huge_examples_ask_for_num_shards_instead_of_hanging() -> None:
    with pytest.raises(plan.PlanError, match="--num_shards"):
        plan.tfds_shard_count(2 << 40, 1000)
