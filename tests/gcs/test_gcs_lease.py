"""The version's lease on GCS: an object under generation preconditions, against the local
GCS JSON API server (which enforces `ifGenerationMatch` as GCS does)."""

from __future__ import annotations

import json
import time

import pytest

from imagenet_beam import lease as leases
from imagenet_beam import verify
from imagenet_beam.layout import OutputLayout
from tests.conftest import convert, gcs_client, start_convert


def _record(path: str) -> dict | None:
    bucket, _, name = path[len("gs://"):].partition("/")
    blob = gcs_client().bucket(bucket).get_blob(name)
    return json.loads(blob.download_as_bytes()) if blob else None


def test_one_holder_at_a_time_and_an_expired_one_is_taken_over(gcs_bucket):
    path = OutputLayout(gcs_bucket).lease_file
    first = leases.Lease(path, "run-a", process_bound=True, ttl=60).acquire()
    assert _record(path)["run_id"] == "run-a"
    with pytest.raises(leases.LeaseHeld, match="held by run run-a"):
        leases.Lease(path, "run-b", process_bound=True).acquire()
    first.release()
    assert _record(path) is None

    gone = leases.Lease(path, "run-gone", process_bound=False, ttl=0.5).acquire()
    gone.stop_renewing()  # as a killed holder: nothing renews it
    with pytest.raises(leases.LeaseHeld):
        leases.Lease(path, "run-b", process_bound=False).acquire()
    time.sleep(0.6)
    taker = leases.Lease(path, "run-b", process_bound=False).acquire()
    assert _record(path)["run_id"] == "run-b"
    gone._renew_gcs()  # its generation is no longer the object's: it knows it lost
    with pytest.raises(leases.LeaseHeld, match="lost its lease"):
        gone.check()
    gone.release()  # releases nothing of the taker's
    assert _record(path)["run_id"] == "run-b"
    taker.release()


def test_a_dag_runs_later_tasks_take_its_lease_again_by_run_id(gcs_bucket):
    path = OutputLayout(gcs_bucket).lease_file
    task = leases.Lease(path, "manual__1", process_bound=False).acquire()
    task.stop_renewing()
    later = leases.Lease(path, "manual__1", process_bound=False).acquire()
    later.stop_renewing()
    with pytest.raises(leases.LeaseHeld):
        leases.Lease(path, "manual__2", process_bound=False).acquire()
    leases.Lease(path, "manual__1", process_bound=False).release()  # the run's teardown
    assert _record(path) is None


def test_a_second_conversion_into_a_bucket_is_refused_while_one_converts(
    gcs_bucket, busy_input
):
    path = OutputLayout(gcs_bucket).lease_file
    first = start_convert(busy_input, gcs_bucket)
    deadline = time.monotonic() + 120
    while (_record(path) or {}).get("owner", "").split(" ")[:2] != ["pid", str(first.pid)]:
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.1)
    # Not paused (as the local tests pause theirs): the GCS server serves one request at a
    # time, and a client stopped inside one would hold it up for everyone.
    second = convert(busy_input, gcs_bucket, "--splits=validation", check=False)
    assert first.poll() is None, "the first conversion ended before the second tried"
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"pid {first.pid}" in second.stderr and path in second.stderr
    verify.verify_output(OutputLayout(gcs_bucket).version_dir, decode=False)
    assert _record(path) is None  # released
