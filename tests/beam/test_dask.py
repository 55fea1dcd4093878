"""`--runner=DaskRunner` on a real dask.distributed cluster (`dask scheduler` and two
`dask worker` processes on localhost), and on a local one: the same shards as the
DirectRunner's, the work spread over the workers, a lost worker survived, and what goes
wrong said in one line with nothing published."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from imagenet_beam import synthetic
from imagenet_beam.errors import DATA_ERROR_EXIT, RUNNER_ERROR_EXIT
from imagenet_beam.layout import OutputLayout, StagingLayout
from tests.conftest import (
    ROOT,
    convert,
    published_shard_digests,
    run_cli,
    version_dir,
)

NUM_SHARDS = 6


def convert_on_dask(manual, data_dir, *extra: str, check: bool = True):
    """The command line's convert on the DaskRunner (a local cluster unless `extra` gives
    --dask_client_address)."""
    return run_cli(
        "convert", f"--manual_dir={manual}", f"--data_dir={data_dir}", "--runner=DaskRunner",
        "--verify_checksums=false", *extra, check=check,
    )


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def _nothing_published(data_dir) -> None:
    assert not os.path.exists(version_dir(data_dir))
    staging = OutputLayout(str(data_dir)).staging_dir
    assert not os.path.exists(staging) or not os.listdir(staging)


@pytest.fixture(scope="module")
def small_input(tmp_path_factory):
    """Train and validation with images the conversion fixes (CMYK, grayscale)."""
    manual = tmp_path_factory.mktemp("dask_input")
    synthetic.generate_manual_dir(
        str(manual), num_classes=4, train_per_class=12, num_validation=24,
        splits=("train", "validation"), awkward=["cmyk_tfds_name", "grayscale"],
    )
    return manual


@pytest.fixture(scope="module")
def direct_digests(small_input, tmp_path_factory):
    data = tmp_path_factory.mktemp("direct")
    convert(small_input, data, "--splits=train,validation", f"--num_shards={NUM_SHARDS}")
    return published_shard_digests(data)


def test_the_cluster_writes_the_direct_runners_shards_and_spreads_the_work(
    dask_cluster, small_input, direct_digests, tmp_path
):
    dask_cluster.replace_lost_workers()
    with dask_cluster.bundles_per_worker() as bundles:
        proc = convert_on_dask(small_input, tmp_path / "out", "--splits=train,validation",
                               f"--num_shards={NUM_SHARDS}",
                               f"--dask_client_address={dask_cluster.address}")
    assert published_shard_digests(tmp_path / "out") == direct_digests
    assert f"converting on the Dask cluster {dask_cluster.address}: 2 worker(s)" in proc.stderr
    # progress comes from the staging work dir, as on every runner
    assert re.search(rf"progress: train: {NUM_SHARDS}/{NUM_SHARDS} shards, (\d+)/\1 images "
                     r"\(100%\)", proc.stderr), proc.stderr[-3000:]
    # Beam's own DaskRunner keeps every element in the partition it was made in: one
    # bundle on one worker would have done it all.
    assert set(bundles) == set(dask_cluster.workers) and min(bundles.values()) >= 2, bundles


def test_a_worker_killed_mid_run_the_other_finishes_the_same_shards(
    dask_cluster, busy_input, tmp_path
):
    """The lost worker's tasks run again on the other one: the same bytes as an
    undisturbed DirectRunner run, and nothing visible before they are all written."""
    dask_cluster.replace_lost_workers()
    flags = ["--splits=train,validation", "--num_shards=16", "--verify_checksums=false"]
    convert(busy_input, tmp_path / "direct", *flags)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagenet_beam", "convert", f"--manual_dir={busy_input}",
         f"--data_dir={out}", "--runner=DaskRunner",
         f"--dask_client_address={dask_cluster.address}", *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    results = _first_shard_written(proc, out)
    victim = sorted(dask_cluster.workers)[-1]
    dask_cluster.kill_worker(victim)
    written_at_kill = len(os.listdir(results))
    assert not os.path.exists(version_dir(out))
    stdout, stderr = proc.communicate(timeout=300)
    assert written_at_kill < 32, "the job had finished before the worker was killed"
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    assert published_shard_digests(out) == published_shard_digests(tmp_path / "direct")
    assert victim not in dask_cluster.worker_names()


def _first_shard_written(proc, out) -> str:
    """Waits until the conversion `proc` into `out` has staged its first shard's result;
    returns the results folder."""
    results = StagingLayout(OutputLayout(str(out)).staging_dir).results_dir
    deadline = time.monotonic() + 300
    while not (os.path.isdir(results) and os.listdir(results)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no shard was written"
        time.sleep(0.01)
    return results


def test_workers_lost_beyond_the_schedulers_patience_fail_in_one_line(
    busy_input, tmp_path
):
    """A scheduler that gives a task no second worker (allowed-failures 0): the kill ends
    the job, with one line that says so, exit 1 (a retry may mend it), nothing published."""
    from tests.dask_cluster import LocalhostCluster

    os.makedirs(tmp_path / "logs")
    cluster = LocalhostCluster(
        str(tmp_path / "logs"), env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    )
    try:
        cluster.start(workers=2)
        out = tmp_path / "out"
        proc = subprocess.Popen(
            [sys.executable, "-m", "imagenet_beam", "convert", f"--manual_dir={busy_input}",
             f"--data_dir={out}", "--runner=DaskRunner", f"--dask_client_address={cluster.address}",
             "--splits=train", "--num_shards=16", "--verify_checksums=false"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        _first_shard_written(proc, out)
        for name in sorted(cluster.workers):
            cluster.kill_worker(name)
        _, stderr = proc.communicate(timeout=300)
    finally:
        cluster.stop()
    assert proc.returncode == RUNNER_ERROR_EXIT, stderr[-3000:]
    error = _one_error_line(stderr)
    assert error.startswith(f"error: the Dask cluster {cluster.address} lost the worker "), error
    assert "Nothing was published" in error
    _nothing_published(out)


def test_bad_input_met_on_a_worker_is_one_line_and_nothing_is_published(
    dask_cluster, tmp_path
):
    """The job's steps record data errors in the staging work dir on Dask workers too."""
    dask_cluster.replace_lost_workers()
    names = ["ILSVRC2012_val_00000001.JPEG", "holiday.JPEG"]
    manual = tmp_path / "manual"
    os.makedirs(manual)
    jpeg = synthetic.image_bytes("plain", np.random.default_rng(0), (32, 24))
    with open(manual / "ILSVRC2012_img_val.tar", "wb") as f:
        f.write(synthetic.tar_bytes([(name, jpeg) for name in names]))
    proc = convert_on_dask(manual, tmp_path / "out", "--splits=validation",
                           f"--dask_client_address={dask_cluster.address}", check=False)
    assert proc.returncode == DATA_ERROR_EXIT, proc.stderr[-3000:]
    error = _one_error_line(proc.stderr)
    assert "'holiday.JPEG' is not named ILSVRC2012_val_NNNNNNNN.JPEG" in error, error
    _nothing_published(tmp_path / "out")


def test_workers_that_do_not_see_a_folder_are_named(dask_cluster, tmp_path, monkeypatch):
    """Every worker must reach the folders at the launcher's paths: here a relative path
    that exists only from the launcher's working directory."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from imagenet_beam import dask_runner

    dask_cluster.replace_lost_workers()
    monkeypatch.chdir(tmp_path)
    os.makedirs("only_here")
    options = PipelineOptions([f"--dask_client_address={dask_cluster.address}"])
    with pytest.raises(ValueError) as refused:
        dask_runner.check_cluster(options, ["only_here"])
    message = str(refused.value)
    assert message.startswith("the Dask worker(s) tcp://127.0.0.1:"), message
    assert message.count("tcp://127.0.0.1:") == 3  # both workers, then the scheduler
    assert "do not see only_here" in message and "at the same paths" in message
    said = dask_runner.check_cluster(options, [str(tmp_path / "only_here")])
    assert said == f"the Dask cluster {dask_cluster.address}: 2 worker(s), 2 thread(s)"


def test_without_an_address_a_local_cluster_converts(small_input, direct_digests, tmp_path):
    proc = convert_on_dask(small_input, tmp_path / "out", "--splits=train,validation",
                           f"--num_shards={NUM_SHARDS}", "--dask_local_workers=2")
    assert "starting a local Dask cluster of 2 worker process(es)" in proc.stderr
    assert published_shard_digests(tmp_path / "out") == direct_digests
    assert "Traceback" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("runner, expected", [
    ("DaskRuner", "--runner=DaskRuner is not a runner. Did you mean DaskRunner? Choose "
                  "DirectRunner ("),
    ("Hadoop", "--runner=Hadoop is not a runner. Choose DirectRunner ("),
    ("my.own.Runner", "--runner=my.own.Runner: cannot import that runner class"),
])
def test_an_unknown_runner_is_one_line_listing_the_runners(small_input, tmp_path, runner,
                                                            expected):
    proc = run_cli("convert", f"--manual_dir={small_input}", f"--data_dir={tmp_path / 'out'}",
                   "--splits=validation", f"--runner={runner}", check=False)
    assert proc.returncode == DATA_ERROR_EXIT
    error = _one_error_line(proc.stderr)
    assert error.startswith(f"error: {expected}"), error
    for name in ("DirectRunner", "DataflowRunner", "DaskRunner"):
        assert name in error
    assert not os.path.exists(tmp_path / "out")


def test_an_unreachable_scheduler_is_one_line_before_any_work(small_input, tmp_path):
    from tests.dask_cluster import free_port

    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    proc = convert_on_dask(small_input, tmp_path / "out", "--splits=validation",
                           f"--dask_client_address={address}", "--dask_connection_timeout=2",
                           check=False)
    assert proc.returncode == RUNNER_ERROR_EXIT
    error = _one_error_line(proc.stderr)
    assert error.startswith(f"error: cannot reach the Dask scheduler {address}"), error
    assert not os.path.exists(tmp_path / "out")  # refused before the archives were read
