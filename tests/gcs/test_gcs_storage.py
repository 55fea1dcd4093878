"""The storage layer against a real GCS JSON API server on localhost."""

from __future__ import annotations

import time

from imagenet_beam import storage
from tests.conftest import gcs_client


def test_storage_round_trip_on_gcs(gcs_bucket, tmp_path):
    started = time.monotonic()
    base = storage.join(gcs_bucket, "some", "prefix")
    storage.write_bytes(storage.join(base, "a", "one.bin"), b"x" * 3_000_000)
    storage.write_bytes(storage.join(base, "two.bin"), b"hello")
    # No credential lookup retries: the server takes none.
    assert time.monotonic() - started < 15

    assert storage.exists(storage.join(base, "two.bin"))
    assert not storage.exists(storage.join(base, "three.bin"))
    assert storage.size(storage.join(base, "a", "one.bin")) == 3_000_000
    assert storage.list_files(base) == [
        f"{base}/a/one.bin",
        f"{base}/two.bin",
    ]
    with storage.open_read(storage.join(base, "a", "one.bin")) as f:
        f.seek(2_999_990)
        assert f.read() == b"x" * 10

    storage.rename_tree(base, storage.join(gcs_bucket, "moved"))
    assert storage.list_files(base) == []
    assert storage.read_bytes(storage.join(gcs_bucket, "moved", "two.bin")) == b"hello"

    local = tmp_path / "local.bin"
    local.write_bytes(b"uploaded")
    storage.upload_file(str(local), storage.join(gcs_bucket, "up.bin"))
    # Read back with google-cloud-storage itself, not through the code under test.
    bucket = gcs_client().bucket(gcs_bucket[len("gs://"):])
    assert bucket.blob("up.bin").download_as_bytes() == b"uploaded"

    storage.delete_tree(storage.join(gcs_bucket, "moved"))
    assert sorted(b.name for b in bucket.list_blobs()) == ["up.bin"]
