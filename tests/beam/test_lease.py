"""One writer per version at a time: the lease, with real processes and signals.

Two command line conversions into one data_dir at once; a killed holder; a DAG run's
lease between its tasks. The DAG's own runs are in tests/dags/test_lease_dag.py, GCS's in
tests/gcs/test_gcs_lease.py.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from imagenet_beam import lease as leases
from imagenet_beam import synthetic
from imagenet_beam.layout import OutputLayout
from tests.conftest import (
    convert,
    paused,
    run_cli,
    start_convert,
    version_dir,
    wait_for_holder,
)


@pytest.fixture(scope="module")
def small_input(tmp_path_factory):
    manual = tmp_path_factory.mktemp("lease_small_input")
    synthetic.generate_manual_dir(str(manual), splits=("train", "validation"))
    return manual


def test_a_second_conversion_into_the_same_data_dir_is_refused_naming_the_holder(
    busy_input, tmp_path
):
    data = tmp_path / "data"
    first = start_convert(busy_input, data, "--file_format=tfrecord")
    holder = wait_for_holder(data, first)
    with paused(first):
        second = convert(busy_input, data, "--splits=train,validation",
                         "--file_format=array_record", check=False)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 2, second.stderr
    message = second.stderr.strip()
    assert message.count("\n") == 0 and "Traceback" not in message
    assert message.startswith("error: another conversion is writing this version")
    assert holder["run_id"] in message and f"pid {first.pid}" in message
    # Exactly one version, the first's, and it verifies.
    run_cli("verify", version_dir(data))
    lineage = json.loads((data / "imagenet2012/5.1.0/lineage.json").read_text())
    assert lineage["options"]["file_format"] == "tfrecord"
    assert not (data / "imagenet2012" / ".5.1.0.incomplete").exists()


def test_a_killed_holder_keeps_nobody_out(busy_input, small_input, tmp_path):
    data = tmp_path / "data"
    first = start_convert(busy_input, data, "--decode_images")
    wait_for_holder(data, first)
    time.sleep(2)  # into the conversion
    first.send_signal(signal.SIGKILL)
    first.wait()
    # At once: the lock died with its process.
    convert(small_input, data, "--splits=train,validation", "--overwrite")
    run_cli("verify", version_dir(data))


def test_a_dag_runs_lease_keeps_a_command_line_run_out_between_its_tasks(small_input, tmp_path):
    data = tmp_path / "data"
    path = OutputLayout(str(data)).lease_file
    run_id = "manual__2026-12-02T00:00:00"
    # What a DAG run's task leaves between its tasks: the record, valid until it expires.
    task = leases.Lease(path, run_id, process_bound=False, ttl=600)
    task.acquire()
    task.stop_renewing()
    refused = convert(small_input, data, "--splits=validation", check=False)
    assert refused.returncode == 2
    assert f"held by run {run_id}" in refused.stderr and "s more unless renewed" in refused.stderr
    assert "Traceback" not in refused.stderr and refused.stderr.count("\n") == 1
    assert not os.path.exists(version_dir(data))
    # The run's later tasks take it again by run id; another run cannot.
    again = leases.Lease(path, run_id, process_bound=False)
    again.acquire()
    again.stop_renewing()
    with pytest.raises(leases.LeaseHeld):
        leases.Lease(path, "scheduled__x", process_bound=False).acquire()
    again.release()  # the run's last task
    convert(small_input, data, "--splits=validation")
    run_cli("verify", version_dir(data))


def test_an_expired_lease_is_taken_over(tmp_path):
    path = str(tmp_path / "imagenet2012" / ".5.1.0.lease")
    gone = leases.Lease(path, "run-gone", process_bound=False, ttl=0.3)
    gone.acquire()
    gone.stop_renewing()
    with pytest.raises(leases.LeaseHeld):
        leases.Lease(path, "run-b", process_bound=False).acquire()
    time.sleep(0.4)
    taken = leases.Lease(path, "run-b", process_bound=False).acquire()
    taken.release()


def test_a_released_lease_and_its_renewal(tmp_path):
    path = str(tmp_path / "imagenet2012" / ".5.1.0.lease")
    lease = leases.Lease(path, "run-a", process_bound=False, ttl=0.6)
    lease.acquire()
    first = json.loads(open(path).read())["expires"]
    time.sleep(0.5)  # renewed every ttl/3
    assert json.loads(open(path).read())["expires"] > first
    lease.release()
    assert not os.path.exists(path)
    leases.Lease(path, "run-b", process_bound=True).acquire().release()
