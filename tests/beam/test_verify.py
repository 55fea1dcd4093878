"""`verify` on a small version published by the CLI: intact, then damaged one way at a time
(each test damages its own copy)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from imagenet_beam import synthetic
from imagenet_beam.verify import VerificationError, verify_output
from tests.conftest import convert, run_cli, version_dir

SPLITS = ("validation", "test")
NUM_SHARDS = 2


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("verify_manual")),
        splits=SPLITS,
        num_validation=6,
        num_test=5,
        test_archives=("2012",),
    )


@pytest.fixture(scope="module")
def published(generated, tmp_path_factory) -> str:
    data_dir = tmp_path_factory.mktemp("verify_out")
    convert(generated.manual_dir, data_dir, f"--splits={','.join(SPLITS)}",
            f"--num_shards={NUM_SHARDS}", "--direct_running_mode=in_memory")
    return version_dir(data_dir)


@pytest.fixture
def version(published, tmp_path) -> str:
    """A copy of the published version, for one test to damage."""
    copy = version_dir(tmp_path)
    shutil.copytree(published, copy)
    return copy


def _lineage(path: str) -> dict:
    with open(os.path.join(path, "lineage.json")) as f:
        return json.load(f)


def _first_shard(path: str) -> dict:
    return _lineage(path)["splits"]["validation"]["shards"][0]


def test_an_intact_version_verifies(published, generated):
    summary = verify_output(published)
    assert summary["version_dir"] == published
    assert sorted(summary["splits"]) == sorted(SPLITS)
    for split in SPLITS:
        facts = summary["splits"][split]
        assert facts["num_examples"] == len(generated.split(split))
        assert facts["num_shards"] == NUM_SHARDS
        assert len(facts["first_image_shape"]) == 3 and facts["first_image_shape"][-1] == 3
    assert (summary["fixed_images"], summary["skipped_images"]) == (0, 0)
    assert verify_output(published, decode=False, checksums=False)["splits"].keys() == set(SPLITS)

    proc = run_cli("verify", published)
    assert proc.stdout.startswith(f"verified {published}")


def test_a_changed_byte_fails_on_sha256(version):
    shard = _first_shard(version)
    path = os.path.join(version, shard["file"])
    data = bytearray(open(path, "rb").read())
    data[12 + 40] ^= 0xFF  # inside the first record's payload: size and framing unchanged
    open(path, "wb").write(bytes(data))

    with pytest.raises(VerificationError, match=re.escape(f"{shard['file']}: sha256 ")) as e:
        verify_output(version, decode=False)
    assert "bytes" not in str(e.value) and "examples" not in str(e.value)
    # sizes only (checksums=False) cannot see it
    verify_output(version, decode=False, checksums=False)

    proc = run_cli("verify", version, check=False)
    assert proc.returncode == 1
    assert f"{shard['file']}: sha256" in proc.stderr


def test_publishing_reads_the_staged_shards_back_and_publishes_nothing_that_changed(
    generated, tmp_path
):
    """The DAG's publish and `python -m imagenet_beam publish` read every staged shard
    back and hash it before anything is visible: a byte changed on the disk after it was
    written is an error naming the shard, and nothing is published."""
    data_dir = tmp_path / "data"
    convert(generated.manual_dir, data_dir, "--splits=validation", "--num_shards=2",
            "--stage_only", "--direct_running_mode=in_memory")
    staging = data_dir / "imagenet2012" / ".5.1.0.incomplete"
    shard = sorted(staging.glob("imagenet2012-validation.tfrecord-*"))[1]
    data = bytearray(shard.read_bytes())
    data[12 + 40] ^= 0xFF  # inside the first record's payload: size and framing unchanged
    shard.write_bytes(bytes(data))

    proc = run_cli("publish", f"--data_dir={data_dir}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    [message] = proc.stderr.strip().splitlines()
    assert message.startswith(f"error: the shards staged in {staging} do not read back")
    assert f"{shard.name}: sha256 " in message and "Nothing was published" in message
    assert not os.path.exists(version_dir(data_dir))

    # as the message says: converted again, it publishes
    convert(generated.manual_dir, data_dir, "--splits=validation", "--num_shards=2",
            "--direct_running_mode=in_memory")
    verify_output(version_dir(data_dir), decode=False)


@pytest.mark.parametrize("checksums", [False, True])
def test_a_truncated_shard_fails_on_bytes(version, checksums):
    shard = _first_shard(version)
    path = os.path.join(version, shard["file"])
    os.truncate(path, shard["num_bytes"] - 10)

    expected = f"{shard['file']}: bytes {shard['num_bytes'] - 10}, lineage.json says " \
        f"{shard['num_bytes']}"
    with pytest.raises(VerificationError, match=re.escape(expected)):
        verify_output(version, decode=False, checksums=checksums)


def test_a_missing_shard_is_named(version):
    shard = _lineage(version)["splits"]["test"]["shards"][1]
    os.remove(os.path.join(version, shard["file"]))
    with pytest.raises(VerificationError, match=re.escape(shard["file"])):
        verify_output(version, decode=False, checksums=False)


@pytest.mark.parametrize("name", ["features.json", "label.labels.txt", "dataset_info.json"])
def test_a_published_file_that_is_gone_is_named(version, name):
    os.remove(os.path.join(version, name))
    with pytest.raises(VerificationError, match=re.escape(name)):
        verify_output(version, decode=False)


def test_a_lineage_edited_after_publication_fails(version):
    with open(os.path.join(version, "lineage.json"), "a") as f:
        f.write(" ")
    with pytest.raises(VerificationError, match="not the one"):
        verify_output(version, decode=False)


def test_a_shard_changed_together_with_its_lineage_entry_fails(version):
    # Rewriting lineage.json to match a changed shard does not make it pass.
    lineage = _lineage(version)
    shard = lineage["splits"]["validation"]["shards"][0]
    path = os.path.join(version, shard["file"])
    data = bytearray(open(path, "rb").read())
    data[12 + 40] ^= 0xFF
    open(path, "wb").write(bytes(data))
    shard["sha256"] = hashlib.sha256(data).hexdigest()
    with open(os.path.join(version, "lineage.json"), "w") as f:
        json.dump(lineage, f, indent=2, sort_keys=True)
    with pytest.raises(VerificationError, match="not the one"):
        verify_output(version, decode=False)


def test_a_version_without_its_completion_marker_fails(version):
    os.remove(os.path.join(version, "_COMPLETE"))
    with pytest.raises(VerificationError, match="publication did not finish"):
        verify_output(version, decode=False, checksums=False)
    proc = run_cli("verify", version, check=False)
    assert proc.returncode == 1 and "_COMPLETE" in proc.stderr


def test_the_dags_decoding_without_tensorflow_sees_what_tfds_sees(published):
    """validate_and_record's read-back (tensorflow=False): TFDS's builder reads the
    metadata and Pillow decodes each split's first image; the same facts as TFDS's own
    decoding, without TensorFlow's import."""
    code = (
        "import json, sys\n"
        "from imagenet_beam.verify import verify_output\n"
        "summary = verify_output(sys.argv[1], tensorflow=False)\n"
        "print(json.dumps([summary, 'tensorflow' in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, published], capture_output=True,
                          text=True, check=True)
    light, imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert imported is False
    assert light == verify_output(published)
