"""Readers beyond TensorFlow, proven by the readers themselves: NVIDIA DALI's TFRecord reader
over the shards and their .idx files (`--tfrecord_index`), Grain over the ArrayRecord shards.
The .idx format is also checked against the shards by walking their records, so it stays
right where DALI cannot be installed."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil

import pytest

from imagenet_beam import (
    dataset,
    formats,
    layout,
    metadata,
    plan,
    publish,
    run,
    shards,
    sources,
    synthetic,
    verify,
)
from imagenet_beam.formats import tfrecord_index
from imagenet_beam.settings import Settings
from imagenet_beam.sources import tarballs
from tests.conftest import convert, dali_index_lines, run_cli, tfrecord_spans, version_dir

SPLITS = ("train", "validation", "test")
NUM_SHARDS = 2
INDEXED = ("--file_format=tfrecord", "--tfrecord_index", f"--num_shards={NUM_SHARDS}",
           "--direct_running_mode=in_memory")


def _shard_paths(version_path: str, split: str, file_format: str) -> list[str]:
    """The split's shards in index order (their names sort that way), without the .idx."""
    pattern = f"imagenet2012-{split}.{file_format}-?????-of-?????"
    return sorted(glob.glob(os.path.join(version_path, pattern)))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _lineage(version_path: str) -> dict:
    with open(os.path.join(version_path, "lineage.json")) as f:
        return json.load(f)


def _tfds_examples(version_path: str, split: str) -> dict[str, tuple[int, tuple]]:
    """file_name → (label, decoded image shape), read back through TFDS."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(version_path)
    return {
        ex["file_name"].decode(): (int(ex["label"]), tuple(ex["image"].shape))
        for ex in tfds.as_numpy(builder.as_dataset(split=split))
    }


@pytest.fixture(scope="module")
def indexed(awkward_input, tmp_path_factory) -> str:
    """The awkward input as TFRecord with DALI's index beside every shard; its data_dir."""
    data_dir = str(tmp_path_factory.mktemp("indexed_out"))
    convert(awkward_input.manual_dir, data_dir, *INDEXED)
    return data_dir


@pytest.fixture(scope="module")
def array_record(awkward_input, tmp_path_factory) -> str:
    data_dir = tmp_path_factory.mktemp("array_record_out")
    convert(awkward_input.manual_dir, data_dir, "--file_format=array_record",
            f"--num_shards={NUM_SHARDS}", "--direct_running_mode=in_memory")
    return version_dir(data_dir)


# --- the index format, without a conversion --------------------------------------------


def test_index_lines_are_the_records_a_walk_finds(tmp_path):
    # Records of every length class: empty, one-byte and multi-byte varint-sized, large.
    records = [b"", b"x", bytes(range(256)) * 3, os.urandom(70_000), b"last"]
    path = str(tmp_path / "imagenet2012-train.tfrecord-00000-of-00001")
    written = formats.get("tfrecord").write(path, ((r,) for r in records))
    text = tfrecord_index.index_text(written.offsets, written.num_bytes)

    assert dali_index_lines(text) == tfrecord_spans(_read(path))
    assert len(dali_index_lines(text)) == len(records)
    assert tfrecord_index.index_problems(text, len(records), written.num_bytes) == []
    assert tfrecord_index.index_text((), 0) == b""
    assert tfrecord_index.index_problems(b"", 0, 0) == []


@pytest.mark.parametrize("read_size", [1, 5, 12, 13, 4096, 8 << 20])
def test_a_read_back_counts_and_hashes_a_shard_in_one_pass(tmp_path, read_size):
    """The read-back's count comes from the headers inside each large read (headers that
    straddle two reads included); the same count and sha256 as a record-by-record walk
    and a hash of the file; a shard cut short inside a header or a record is named."""
    from imagenet_beam.formats import tfrecord

    records = [b"", b"x", bytes(range(256)) * 3, os.urandom(70_000), b"last"]
    path = str(tmp_path / "imagenet2012-train.tfrecord-00000-of-00001")
    written = formats.get("tfrecord").write(path, ((r,) for r in records))
    data = _read(path)
    shard_format = formats.get("tfrecord")
    chunks = (data[i:i + read_size] for i in range(0, len(data), read_size))
    assert tfrecord.count_and_hash_chunks(chunks, path) == (
        len(tfrecord_spans(data)), hashlib.sha256(data).hexdigest())
    assert shard_format.count_and_hash(path) == (len(records), written.sha256)
    for cut, where in ((len(data) - 3, "a record"), (written.offsets[-1] + 5, "a record header")):
        with open(path, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(tfrecord.ShardFormatError, match=f"ends inside {where}$"):
            shard_format.count_and_hash(path)


@pytest.mark.parametrize(("tamper", "message"), [
    (lambda lines: lines[:-1], "4 lines for 5 records"),
    (lambda lines: [lines[0], "17 " + lines[1].split()[1], *lines[2:]],
     "line 2 starts a record at 17, line 1 ends at 16"),
    (lambda lines: [*lines[:2], "many bytes", *lines[3:]], "line 3 is 'many bytes'"),
    (lambda lines: ["0 3", *lines[1:]], "line 1 gives a record of 3 bytes"),
    (lambda lines: [*lines[:-1], lines[-1].split()[0] + " 99"], "its records end at byte"),
])
def test_index_problems_say_which_line_is_wrong(tamper, message, tmp_path):
    path = str(tmp_path / "shard")
    written = formats.get("tfrecord").write(path, ((r,) for r in [b"", b"a", b"bb", b"c", b"d"]))
    lines = tfrecord_index.index_text(written.offsets, written.num_bytes).decode().splitlines()
    tampered = "".join(f"{line}\n" for line in tamper(lines)).encode()
    [problem] = tfrecord_index.index_problems(tampered, 5, written.num_bytes)
    assert problem.startswith(message), problem


def _one_shard(tmp_path, **given):
    """A one-shard train split with one broken member, its spec, source and settings."""
    generated = synthetic.generate_manual_dir(
        str(tmp_path / "manual"), num_classes=2, train_per_class=3, splits=("train",),
        broken=(synthetic.BROKEN_KINDS[0],),
    )
    archive = os.path.join(generated.manual_dir, dataset.TRAIN_ARCHIVE)
    refs = [
        ref
        for inner in tarballs.list_inner_tars(archive)
        for ref in tarballs.index_inner_tar(archive, inner)
    ]
    [spec] = plan.plan_split("train", refs, num_shards=1)
    settings = Settings.from_mapping(
        {"manual_dir": generated.manual_dir, "data_dir": str(tmp_path / "out"), **given}
    )
    return spec, sources.get(), settings


def test_the_shard_writer_writes_the_index_and_deletes_it_with_a_failed_shard(tmp_path):
    out = tmp_path / "staging"
    out.mkdir()
    spec, source, settings = _one_shard(tmp_path, tfrecord_index=True, on_corrupt="skip")
    result = shards.write_shard(spec, settings, source, str(out))
    shard = out / result.file
    index = out / layout.index_file_name(result.file)
    assert sorted(os.listdir(out)) == [result.file, index.name]
    assert dali_index_lines(index.read_bytes()) == tfrecord_spans(shard.read_bytes())
    assert result.index_file == {
        "file": index.name, "num_bytes": index.stat().st_size,
        "sha256": hashlib.sha256(index.read_bytes()).hexdigest(),
    }
    assert shards.ShardResult.from_json(result.to_json()) == result

    # A failed shard takes its index with it, a stale one from an earlier attempt too.
    failing = settings.replace(on_corrupt="fail")
    with pytest.raises(shards.CorruptMemberError):
        shards.write_shard(spec, failing, source, str(out))
    assert os.listdir(out) == []

    # So does a failed index: the shard is deleted with it.
    index.mkdir()
    with pytest.raises(OSError):
        shards.write_shard(spec, settings, source, str(out))
    assert not shard.exists()

    # Without the setting, no index.
    result = shards.write_shard(spec, settings.replace(tfrecord_index=False), source, str(out))
    assert os.listdir(out) == [result.file] and result.index_file is None


def test_index_files_are_version_files_published_with_the_shards(tmp_path):
    shard = layout.shard_file_name("validation", "tfrecord", 0, 2)
    index = layout.index_file_name(shard)
    assert index == "imagenet2012-validation.tfrecord-00000-of-00002.idx"
    assert layout.is_index_file(index) and not layout.is_index_file(shard)
    assert not layout.is_index_file("lineage.json.idx")
    assert layout.is_version_file(index) and layout.is_split_shard(index, "validation")
    # On GCS, files are moved in groups: the index with its shard, before any metadata.
    staging = str(tmp_path)
    names = ["lineage.json", "dataset_info.json", "features.json", index, shard]
    groups = publish._publication_order([os.path.join(staging, n) for n in names])
    assert [sorted(os.path.basename(p) for p in g) for g in groups] == [
        sorted([shard, index]), ["features.json"], ["dataset_info.json"], ["lineage.json"]
    ]
    # A retried split's staged index goes with its shards.
    staged = layout.StagingLayout(staging)
    for name in (shard, index, layout.shard_file_name("train", "tfrecord", 0, 2)):
        (tmp_path / name).write_bytes(b"")
    publish.clear_staged_split(staged, "validation")
    assert os.listdir(tmp_path) == [layout.shard_file_name("train", "tfrecord", 0, 2)]


def test_an_index_for_array_record_shards_is_refused(awkward_input, tmp_path):
    proc = convert(awkward_input.manual_dir, tmp_path, "--file_format=array_record",
                   "--tfrecord_index", check=False)
    assert proc.returncode != 0
    assert "--tfrecord_index" in proc.stderr and "ArrayRecordDataSource" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(os.path.join(tmp_path, "imagenet2012"))


# --- a conversion with --tfrecord_index ------------------------------------------------


def test_every_shard_has_its_index_listed_in_lineage_and_the_marker(indexed):
    path = version_dir(indexed)
    lineage = _lineage(path)
    with open(os.path.join(path, layout.COMPLETE_MARKER)) as f:
        marker = json.load(f)
    assert lineage["options"]["tfrecord_index"] is True
    for split in SPLITS:
        listed = lineage["splits"][split]["shards"]
        assert [s["file"] for s in listed] == [
            os.path.basename(p) for p in _shard_paths(path, split, "tfrecord")
        ]
        assert len(listed) == NUM_SHARDS
        for shard in listed:
            index = _read(os.path.join(path, shard["file"] + ".idx"))
            spans = tfrecord_spans(_read(os.path.join(path, shard["file"])))
            assert dali_index_lines(index) == spans and len(spans) == shard["num_examples"]
            assert shard["index_file"] == {
                "file": shard["file"] + ".idx", "num_bytes": len(index),
                "sha256": hashlib.sha256(index).hexdigest(),
            }
            assert marker["files"][shard["file"] + ".idx"] == len(index)
    assert publish.files_not_ours(path) == []
    verify.verify_output(path, decode=True)


def test_dali_reads_every_example_and_decodes_every_image(awkward_input, indexed):
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    import nvidia.dali.tfrecord as tfrec
    from nvidia.dali import fn, pipeline_def, types

    path = version_dir(indexed)
    features = {
        "image": tfrec.FixedLenFeature((), tfrec.string, ""),
        "label": tfrec.FixedLenFeature([1], tfrec.int64, -2),
        "file_name": tfrec.FixedLenFeature((), tfrec.string, ""),
    }
    for split in SPLITS:
        files = _shard_paths(path, split, "tfrecord")

        @pipeline_def(batch_size=8, num_threads=1, device_id=None)
        def read_split(files=files):
            example = fn.readers.tfrecord(
                path=files, index_path=[f + ".idx" for f in files], features=features,
                name="reader", pad_last_batch=True,
            )
            # As TFDS decodes (tf.io.decode_jpeg): DALI would otherwise apply EXIF rotation.
            image = fn.decoders.image(example["image"], device="cpu", output_type=types.RGB,
                                      adjust_orientation=False)
            return image, example["label"], example["file_name"]

        pipe = read_split()
        pipe.build()
        size = pipe.epoch_size("reader")
        seen = []
        while len(seen) < size:
            images, labels, names = pipe.run()
            seen += [
                (bytes(names.at(i)).decode(), (int(labels.at(i)[0]), images.at(i).shape))
                for i in range(len(images))
            ]
        seen = seen[:size]  # the last batch is padded with its last example
        del pipe

        tfds_read = _tfds_examples(path, split)
        assert size == len(tfds_read) == len(awkward_input.split(split))
        assert len({name for name, _ in seen}) == size
        assert dict(seen) == tfds_read, split  # names, labels and decoded shapes


def test_grain_reads_every_array_record_example_once(awkward_input, array_record):
    grain = pytest.importorskip("grain", reason="Grain is not installed")
    import tensorflow as tf
    import tensorflow_datasets as tfds

    class ParseExample(grain.transforms.Map):
        def map(self, record: bytes) -> tuple[str, int]:
            feature = tf.train.Example.FromString(record).features.feature
            return (feature["file_name"].bytes_list.value[0].decode(),
                    feature["label"].int64_list.value[0])

    for split in SPLITS:
        source = grain.sources.ArrayRecordDataSource(
            _shard_paths(array_record, split, "array_record")
        )
        expected = {m.file_name: m.label for m in awkward_input.split(split)}
        assert len(source) == len(expected)
        loader = grain.DataLoader(
            data_source=source,
            sampler=grain.samplers.IndexSampler(
                len(source), shuffle=True, seed=7, num_epochs=1,
                shard_options=grain.sharding.NoSharding(),
            ),
            operations=[ParseExample()],
            worker_count=0,
        )
        seen = list(loader)
        assert sorted(name for name, _ in seen) == sorted(expected)  # each exactly once
        assert dict(seen) == expected
        # Through Grain's dataset API, in record order: TFDS's order.
        records = grain.MapDataset.source(source).map(ParseExample().map)
        tfds_source = tfds.builder_from_directory(array_record).as_data_source(split=split)
        assert list(records) == [
            (example["file_name"].decode(), int(example["label"])) for example in tfds_source
        ]


def test_a_lineage_written_before_the_index_existed_still_reads(indexed):
    record = _lineage(version_dir(indexed))
    for info in record["splits"].values():
        for shard in info["shards"]:
            del shard["index_file"]
    old = metadata.Lineage.from_dict(record)
    assert all(s.index_file is None for s in old.splits["train"].shards)
    assert old.splits["train"].shards[0].sha256 == record["splits"]["train"]["shards"][0]["sha256"]


def test_verify_flags_a_tampered_or_missing_index(indexed, tmp_path):
    path = version_dir(tmp_path)
    shutil.copytree(version_dir(indexed), path)
    [first, *_] = _shard_paths(path, "validation", "tfrecord")
    index = first + ".idx"
    original = _read(index)
    lines = original.decode().splitlines()
    offset, size = lines[1].split()
    lines[1] = f"{offset} {int(size) - 1}"  # one byte short: the same file size either way
    with open(index, "w") as f:
        f.write("".join(f"{line}\n" for line in lines))

    proc = run_cli("verify", path, check=False)
    assert proc.returncode != 0
    name = os.path.basename(index)
    assert f"{name}: sha256" in proc.stderr and f"{name}: line 3 starts a record" in proc.stderr

    os.remove(index)
    with pytest.raises(verify.VerificationError, match=f"lacks files .*{name}"):
        verify.verify_output(path, decode=False)


def test_a_deleted_index_or_a_changed_setting_converts_again(awkward_input, indexed, tmp_path):
    data_dir = str(tmp_path / "out")
    shutil.copytree(indexed, data_dir)
    path = version_dir(data_dir)
    settings = Settings.from_mapping(
        {"manual_dir": awkward_input.manual_dir, "data_dir": data_dir, "tfrecord_index": True}
    )
    wanted = _lineage(path)["fingerprint"]
    assert run.up_to_date(settings, wanted)
    assert run.fingerprint(settings.replace(tfrecord_index=False), []) != run.fingerprint(
        settings, []
    )

    [first, *_] = _shard_paths(path, "train", "tfrecord")
    original = _read(first + ".idx")
    os.remove(first + ".idx")
    assert run.up_to_date(settings, wanted) is None
    proc = convert(awkward_input.manual_dir, data_dir, *INDEXED)
    assert "up to date" not in proc.stdout and f"wrote {path}" in proc.stdout
    assert _read(first + ".idx") == original

    # Turned off, the version is converted again (replacing it) and its indexes go with it.
    proc = convert(awkward_input.manual_dir, data_dir, *INDEXED[:1], *INDEXED[2:],
                   "--overwrite")
    assert f"wrote {path}" in proc.stdout
    assert not [n for n in os.listdir(path) if layout.is_index_file(n)]
    assert all(s["index_file"] is None for s in _lineage(path)["splits"]["train"]["shards"])
    assert publish.files_not_ours(path) == []
    verify.verify_output(path, decode=False)
