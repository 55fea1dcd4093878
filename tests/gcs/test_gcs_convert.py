"""The conversion CLI with gs:// input and output, against a real GCS JSON API server on
localhost: same shards as a local run, atomic publication with a completion marker."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from imagenet_beam import storage, verify
from tests.conftest import ROOT, convert, dali_index_lines, gcs_client, tfrecord_spans
from tests.gcs.stalling_proxy import StallingProxy

VERSION = "imagenet2012/5.1.0"
KILLED_LEASE_SECONDS = 3


def _upload_dir(local_dir: str, destination: str) -> None:
    for name in sorted(os.listdir(local_dir)):
        storage.upload_file(os.path.join(local_dir, name), storage.join(destination, name))


def _bucket_files(prefix: str) -> dict[str, bytes]:
    """name below prefix → bytes, read with google-cloud-storage (not our storage layer)."""
    bucket_name, _, path = prefix[len("gs://"):].partition("/")
    bucket = gcs_client().bucket(bucket_name)
    start = len(path) + 1 if path else 0
    return {
        blob.name[start:]: blob.download_as_bytes()
        for blob in bucket.list_blobs(prefix=path + "/" if path else None)
    }


def _local_files(directory: str) -> dict[str, bytes]:
    names = os.listdir(directory)
    return {name: open(os.path.join(directory, name), "rb").read() for name in names}


def _shard_digests(files: dict[str, bytes]) -> dict[str, str]:
    return {
        name: hashlib.sha256(data).hexdigest()
        for name, data in files.items()
        if name.startswith("imagenet2012-")
    }


@pytest.fixture(scope="module")
def gcs_manual_dir(gcs_server, awkward_input):
    """The awkward input uploaded to its own bucket."""
    client = gcs_client()
    client.create_bucket("imagenet-manual")
    _upload_dir(awkward_input.manual_dir, "gs://imagenet-manual/downloads")
    return "gs://imagenet-manual/downloads"


def test_gcs_output_has_the_same_shards_as_a_local_run(
    gcs_manual_dir, gcs_bucket, tfrecord_output
):
    convert(gcs_manual_dir, gcs_bucket, "--file_format=tfrecord", "--num_shards=3")

    remote = _bucket_files(f"{gcs_bucket}/{VERSION}")
    local = _local_files(tfrecord_output[0])
    assert _shard_digests(remote) == _shard_digests(local)
    assert len(_shard_digests(remote)) == 9
    assert set(remote) == set(local)  # metadata, lineage and the completion marker too
    marker = json.loads(remote["_COMPLETE"])
    assert marker["lineage_sha256"] == hashlib.sha256(remote["lineage.json"]).hexdigest()
    assert set(marker["files"]) == set(remote) - {"_COMPLETE"}
    lineage = json.loads(remote["lineage.json"])
    assert lineage["inputs"]["train"]["path"].startswith(gcs_manual_dir)
    # Nothing else was left in the bucket: no staging prefix, no scratch files.
    # (beside the version, only the archive checks' cache, which the next run reads).
    kept = {n for n in _bucket_files(gcs_bucket) if not n.startswith(".imagenet2012-work/")}
    assert kept == {f"{VERSION}/{n}" for n in remote}
    assert {n.split("/")[1] for n in set(_bucket_files(gcs_bucket)) - kept} == {"archive-checks"}
    summary = verify.verify_output(f"{gcs_bucket}/{VERSION}", decode=True)
    assert summary["splits"]["train"]["first_image_shape"][-1] == 3


def test_array_record_is_written_locally_and_uploaded(gcs_manual_dir, gcs_bucket, tmp_path):
    from array_record.python.array_record_module import ArrayRecordReader

    convert(gcs_manual_dir, gcs_bucket, "--file_format=array_record", "--splits=validation")
    remote = _bucket_files(f"{gcs_bucket}/{VERSION}")
    lineage = json.loads(remote["lineage.json"])
    [shard] = lineage["splits"]["validation"]["shards"]
    local = tmp_path / shard["file"]
    local.write_bytes(remote[shard["file"]])
    reader = ArrayRecordReader(str(local))
    assert reader.num_records() == shard["num_examples"] == 14
    reader.close()
    verify.verify_output(f"{gcs_bucket}/{VERSION}", decode=True)


def test_dali_index_files_are_staged_and_published_on_gcs(gcs_manual_dir, gcs_bucket):
    convert(gcs_manual_dir, gcs_bucket, "--tfrecord_index", "--splits=validation",
            "--num_shards=2")
    remote = _bucket_files(f"{gcs_bucket}/{VERSION}")
    lineage = json.loads(remote["lineage.json"])
    marker = json.loads(remote["_COMPLETE"])
    shards = lineage["splits"]["validation"]["shards"]
    assert len(shards) == 2
    for shard in shards:
        index = remote[shard["file"] + ".idx"]
        assert dali_index_lines(index) == tfrecord_spans(remote[shard["file"]])
        assert shard["index_file"]["sha256"] == hashlib.sha256(index).hexdigest()
        assert marker["files"][shard["file"] + ".idx"] == len(index)
    assert set(marker["files"]) == set(remote) - {"_COMPLETE"}
    staged = [n for n in _bucket_files(gcs_bucket) if ".incomplete" in n]
    assert staged == []
    verify.verify_output(f"{gcs_bucket}/{VERSION}", decode=False)


def _convert_until_stalled(manual_dir: str, data_dir: str, stall_on: str) -> None:
    """Runs the CLI through a proxy that holds the first request naming `stall_on`, then
    kills the process there (SIGKILL: no clean-up code runs)."""
    with StallingProxy(os.environ["STORAGE_EMULATOR_HOST"], stall_on) as proxy:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imagenet_beam", "convert", f"--manual_dir={manual_dir}",
             f"--data_dir={data_dir}", "--num_shards=3", "--verify_checksums=false"],
            cwd=ROOT,
            # A killed run's lease on GCS lasts until it expires (nothing dies with a
            # process there): short here, and waited out after the kill.
            env={**os.environ, "STORAGE_EMULATOR_HOST": proxy.url,
                 "IMAGENET2012_CLI_LEASE_SECONDS": str(KILLED_LEASE_SECONDS)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            stalled = proxy.stalled.wait(timeout=300)
            finished_first = proc.poll()
            assert stalled, f"never reached {stall_on!r}: {proc.stderr.read().decode()[-3000:]}"
            assert finished_first is None
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
    time.sleep(KILLED_LEASE_SECONDS + 0.5)


def test_killed_conversions_leave_no_marker_and_the_next_run_publishes(
    gcs_manual_dir, gcs_bucket, tfrecord_output
):
    final = f"{gcs_bucket}/{VERSION}"
    reference = _shard_digests(_local_files(tfrecord_output[0]))

    # Killed while converting: shards staged, nothing under the version prefix.
    _convert_until_stalled(gcs_manual_dir, gcs_bucket, "_work/shards/")
    left = _bucket_files(gcs_bucket)
    assert any(".5.1.0.incomplete/" in name for name in left)
    assert not any(name.startswith(VERSION + "/") for name in left)

    # Killed while publishing, just before the marker: every file is in place, no marker.
    _convert_until_stalled(gcs_manual_dir, gcs_bucket, "5.1.0/_COMPLETE")
    partial = _bucket_files(final)
    assert "_COMPLETE" not in partial
    assert {"dataset_info.json", "lineage.json"} <= set(partial)
    assert _shard_digests(partial) == reference
    with pytest.raises(verify.VerificationError, match="no _COMPLETE marker"):
        verify.verify_output(final, decode=False)
    proc = subprocess.run(
        [sys.executable, "-m", "imagenet_beam", "verify", final],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode != 0 and "publication did not finish" in proc.stderr

    # The next run (no --overwrite needed: nothing was published) cleans up and publishes.
    convert(gcs_manual_dir, gcs_bucket, "--num_shards=3")
    published = _bucket_files(final)
    assert "_COMPLETE" in published
    assert _shard_digests(published) == reference
    assert not any(".incomplete" in name for name in _bucket_files(gcs_bucket))
    verify.verify_output(final, decode=False)

    # The same conversion again has nothing to do; one with other settings is refused
    # unless --overwrite.
    same = convert(gcs_manual_dir, gcs_bucket, "--num_shards=3")
    assert "is up to date" in same.stdout
    refused = convert(gcs_manual_dir, gcs_bucket, "--num_shards=2", check=False)
    assert refused.returncode != 0 and "--overwrite" in refused.stderr
